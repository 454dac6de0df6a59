"""Fuzzing the edges where outside data enters: the annotation and prediction loaders and the HTTP request
parser take any JSON-shaped (or byte) input and either accept it or refuse it with their own error type;
anything else (a KeyError, TypeError, a traceback) is a bug."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tal.datasets.activitynet import read_activitynet_json
from tal.datasets.grounding import read_grounding_jsonl
from tal.errors import TalInputError
from tal.eval.predictions import parse_grounding_predictions, parse_segment_predictions
from tal.serve import RequestError, parse_query

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCALARS = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True) \
    | st.text(max_size=8)
ANY_JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8), inner, max_size=4), max_leaves=12)
NUMBER = st.integers(-5, 100) | st.floats(-5, 100) | st.sampled_from([float("nan"), float("inf"), -float("inf")]) \
    | st.text(max_size=4)
SEGMENT = st.lists(NUMBER, min_size=0, max_size=3) | SCALARS
# near-valid structures reach deeper checks than random JSON does
ANNOTATION = st.fixed_dictionaries({"segment": SEGMENT, "label": st.text(max_size=4) | SCALARS})
VIDEO = st.fixed_dictionaries({"subset": st.sampled_from(["training", "validation"]) | SCALARS,
                               "duration": NUMBER, "annotations": st.lists(ANNOTATION, max_size=3) | SCALARS})
DATABASE = st.fixed_dictionaries({"database": st.dictionaries(st.text(min_size=1, max_size=6), VIDEO | ANY_JSON,
                                                              max_size=3) | ANY_JSON})
PREDICTION = st.fixed_dictionaries({"segment": SEGMENT, "score": NUMBER, "label": st.text(max_size=4) | SCALARS})
RESULTS = st.fixed_dictionaries({"results": st.dictionaries(st.text(min_size=1, max_size=6),
                                                            st.lists(PREDICTION | ANY_JSON, max_size=3) | ANY_JSON,
                                                            max_size=3) | ANY_JSON})
QUERY = st.fixed_dictionaries({"video": st.text(max_size=4) | SCALARS, "duration": NUMBER,
                               "query": st.text(max_size=12) | SCALARS, "segment": SEGMENT,
                               "moments": st.lists(st.lists(NUMBER, max_size=4), max_size=3) | ANY_JSON})


def _write(tmp: str, name: str, text: str) -> Path:
    path = Path(tmp) / name
    path.write_text(text, encoding="utf-8")
    return path


@FUZZ
@given(DATABASE | ANY_JSON)
def test_activitynet_loader_accepts_or_refuses(data):
    with tempfile.TemporaryDirectory() as tmp:
        try:
            read_activitynet_json(_write(tmp, "gt.json", json.dumps(data)))
        except TalInputError:
            pass


@FUZZ
@given(RESULTS | ANY_JSON, st.booleans())
def test_segment_predictions_accept_or_refuse(data, with_labels):
    try:
        parse_segment_predictions(data, "fuzz.json", with_labels=with_labels)
    except TalInputError:
        pass


@FUZZ
@given(st.lists(QUERY | ANY_JSON, min_size=1, max_size=4))
def test_grounding_jsonl_loader_accepts_or_refuses(lines):
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(tmp, "q.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
        try:
            read_grounding_jsonl(path)
        except TalInputError:
            pass


@FUZZ
@given(st.lists(QUERY | st.dictionaries(st.text(max_size=8), ANY_JSON, max_size=4), min_size=1, max_size=4))
def test_grounding_predictions_accept_or_refuse(lines):
    """Lines as `iter_jsonl` gives them: JSON objects (anything else it refuses itself)."""
    try:
        parse_grounding_predictions(list(enumerate(lines, 1)), "fuzz.jsonl")
    except TalInputError:
        pass


@FUZZ
@given(st.binary(max_size=64) | st.builds(lambda d: json.dumps(d).encode(), QUERY | ANY_JSON))
def test_http_query_parser_accepts_or_refuses(body):
    try:
        video, sentence, top_k = parse_query(body, frozenset({"v", "", "0"}))
    except RequestError as exc:
        assert 400 <= exc.status < 500 and exc.reason
    else:
        assert isinstance(video, str) and sentence and 1 <= top_k <= 100
