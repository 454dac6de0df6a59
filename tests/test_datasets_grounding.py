"""The grounding JSONL contract: round trip, atomic writes, validation; 2D-TAN's clipping rule."""
import json

import numpy as np
import pytest

from tal.datasets.grounding import (CLIPPED_END, CLIPPED_START, DROPPED_EMPTY, clip_queries, read_grounding_jsonl,
                                    write_grounding_jsonl)
from tal.datasets.types import GroundingQuery, LoadReport
from tal.errors import TalInputError

QUERIES = [
    GroundingQuery("vid1", 30.96, "person turn a light on", (24.3, 30.4)),
    GroundingQuery("vid1", 30.96, "une personne ouvre la porte", (0.0, 1e-3)),
    GroundingQuery("s30-d52.avi", 7346 / 29.4, "She took out kiwi", (141 / 29.4, 354 / 29.4)),
]


def test_round_trip_is_exact(tmp_path):
    path = tmp_path / "q.jsonl"
    write_grounding_jsonl(QUERIES, path)
    assert read_grounding_jsonl(path) == QUERIES
    first = json.loads(path.read_text().splitlines()[0])
    assert first == {"video": "vid1", "duration": 30.96, "query": "person turn a light on", "segment": [24.3, 30.4]}


def test_write_replaces_atomically_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("old\n")
    write_grounding_jsonl(QUERIES[:1], path)
    assert len(path.read_text().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.jsonl"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "q.jsonl"
    write_grounding_jsonl(QUERIES, path)
    before = path.read_text()
    bad = [QUERIES[0], GroundingQuery("v", 10.0, "x", ("a", 2.0))]  # float("a") fails half-way
    with pytest.raises(ValueError):
        write_grounding_jsonl(bad, path)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.jsonl"]


def test_reference_prediction_file_reads_as_ground_truth(shared_data):
    queries = read_grounding_jsonl(shared_data / "reference" / "charades_sta_test_predictions_seed1.jsonl")
    assert len(queries) == 3720
    assert queries[0] == GroundingQuery("3MSZA", 30.96, "person turn a light on", (24.3, 30.4))


@pytest.mark.parametrize("line, message", [
    ('{"video": "v", "duration": 10, "query": "q"}', r":1: missing key 'segment'"),
    ('{"video": "v", "duration": 10, "query": "q", "segment": [3, 2]}', r":1: segment end 2.0 is before its start 3.0"),
    ('{"video": "v", "duration": 10, "query": "q", "segment": [2, 2]}', r":1: segment \[2.0, 2.0\] has zero length"),
    ('{"video": "v", "duration": 10, "query": "q", "segment": [NaN, 2]}', r":1: segment \[nan, 2\] is not finite"),
    ('{"video": "v", "duration": 10, "query": "q", "segment": [2, 11]}',
     r":1: segment \[2.0, 11.0\] lies outside the video \[0, 10\]; clip it"),
    ('{"video": "v", "duration": 0, "query": "q", "segment": [0, 1]}', r":1: 'duration' must be a positive number"),
    ('{"video": "v", "duration": 10, "query": " ", "segment": [0, 1]}', r":1: 'query' must be a non-empty string"),
    ('{"video": 7, "duration": 10, "query": "q", "segment": [0, 1]}', r":1: 'video' must be a non-empty string"),
    ('["v", 10, "q", [0, 1]]', r":1: expected a JSON object, got list"),
    ('{"video": "v", "duration": 10,', r":1: malformed JSON line"),
])
def test_reader_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "q.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(TalInputError, match=r"q\.jsonl" + message):
        read_grounding_jsonl(path)


def test_clip_queries_by_hand():
    report = LoadReport()
    queries = clip_queries(
        ["a", "a", "b", "b"], np.array([10.0, 10.0, 5.0, 5.0]), ["q0", "q1", "q2", "q3"],
        start_s=np.array([-1.0, 2.0, 4.0, 6.0]), end_s=np.array([3.0, 12.0, 4.0, 8.0]), source="s", report=report)
    # q0 start clipped to 0; q1 end clipped to 10; q2 empty; q3 starts after the 5 s video: [6, 5] dropped
    assert queries == [GroundingQuery("a", 10.0, "q0", (0.0, 3.0)), GroundingQuery("a", 10.0, "q1", (2.0, 10.0))]
    assert report.dropped == {DROPPED_EMPTY: 2}
    assert report.changed == {CLIPPED_START: 1, CLIPPED_END: 1}
    assert report.describe() == (f"dropped 2 {DROPPED_EMPTY}; 1 {CLIPPED_START}; 1 {CLIPPED_END}")
