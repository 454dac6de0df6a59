"""Reading prediction files into flat arrays, with errors that name the file and the entry.

Detection / proposals: the ActivityNet submission format
`{"results": {vid: [{"label", "score", "segment": [s, e]}]}}` (proposals may omit `label`).
Grounding: JSONL, one query a line, `{"video", "query", "segment"?, "moments": [[s, e, score], ...]}`.

Well-formed files take a vectorized fast path; only when it fails do we walk the entries to find the
first bad one and say where it is.

A predicted segment (or moment) with end < start is accepted, not refused: the official evaluators
accept it (it overlaps nothing, so it is a false positive), real post-processing produces it (an end
clipped to the video length before a start beyond it), and the reference prediction files hold some.
The evaluators count them in their notes. Ground-truth segments with end < start are errors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from tal.datasets.jsonio import iter_jsonl, parse_segment, read_json, require
from tal.errors import TalInputError


@dataclass
class SegmentPredictions:
    """Detection or proposal predictions of one file, flattened in file order."""

    video_ids: list[str]  # [V] in file order
    counts: np.ndarray  # [V] predictions per video
    segments: np.ndarray  # [N, 2] seconds, float64
    scores: np.ndarray  # [N] float64
    labels: list[str] | None  # [N]; None when read without labels (proposals)
    source: str = ""

    @property
    def num_predictions(self) -> int:
        return int(self.segments.shape[0])

    @property
    def num_reversed(self) -> int:
        """Segments with end < start: they overlap nothing (see the module doc)."""
        return int((self.segments[:, 1] < self.segments[:, 0]).sum())

    def video_of_each(self) -> np.ndarray:
        """Index into `video_ids` of every prediction: [N]."""
        return np.repeat(np.arange(len(self.video_ids)), self.counts)


def read_segment_predictions(path: str | Path, with_labels: bool = True) -> SegmentPredictions:
    """Load an ActivityNet-style prediction file (detection: `with_labels=True`; proposals: False)."""
    return parse_segment_predictions(read_json(path), str(path), with_labels)


def parse_segment_predictions(data: Any, source: str = "predictions", with_labels: bool = True) -> SegmentPredictions:
    """Validate an in-memory submission object (`{"results": {...}}`) and flatten it.

    Segments and scores may be numbers or numeric strings. NaN/Inf, end < start, missing keys and
    a missing or non-object `results` are `TalInputError`s naming `source` and the entry.
    """
    if not isinstance(data, dict) or "results" not in data:
        raise TalInputError(f"{source}: not a prediction file: no top-level 'results' object "
                            f"(expected {{\"results\": {{video: [{{\"segment\", \"score\", \"label\"}}]}}}})")
    results = data["results"]
    if not isinstance(results, dict):
        raise TalInputError(f"{source}: 'results' must be an object mapping video id to a list of predictions, "
                            f"got {type(results).__name__}")
    video_ids: list[str] = []
    counts: list[int] = []
    for vid, items in results.items():
        if not isinstance(items, list):
            raise TalInputError(f"{source}: results[{vid!r}] must be a list of predictions, got {type(items).__name__}")
        video_ids.append(str(vid))
        counts.append(len(items))
    flat = [item for items in results.values() for item in items]
    try:
        segments = np.array([item["segment"] for item in flat], dtype=np.float64).reshape(len(flat), 2)
        scores = np.array([item["score"] for item in flat], dtype=np.float64).reshape(len(flat))
        labels = [item["label"] for item in flat] if with_labels else None
    except (KeyError, TypeError, ValueError, IndexError):
        _raise_first_problem(results, source, with_labels)
        raise  # unreachable: the walk above always finds the problem
    bad = ~np.isfinite(segments).all(axis=1) | ~np.isfinite(scores)
    if labels is not None and not all(isinstance(label, str) for label in labels):
        bad |= np.array([not isinstance(label, str) for label in labels])
    if bad.any():
        _raise_first_problem(results, source, with_labels)
    return SegmentPredictions(video_ids, np.asarray(counts, dtype=np.int64), segments, scores, labels, source)


def _raise_first_problem(results: dict, source: str, with_labels: bool) -> None:
    for vid, items in results.items():
        for i, item in enumerate(items):
            where = f"{source}: results[{vid!r}][{i}]"
            if not isinstance(item, dict):
                raise TalInputError(f"{where}: expected an object, got {type(item).__name__}")
            _parse_predicted_segment(require(item, "segment", where), where)
            _parse_score(require(item, "score", where), where)
            if with_labels and not isinstance(require(item, "label", where), str):
                raise TalInputError(f"{where}: label must be a string (a class name of the ground truth), "
                                    f"got {item['label']!r}")
    raise AssertionError("no bad entry found")  # pragma: no cover


def _parse_predicted_segment(value: Any, where: str) -> None:
    """A predicted `[start, end]`: two finite numbers. end < start is allowed (see the module doc)."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise TalInputError(f"{where}: segment must be [start, end], got {value!r}")
    try:
        numbers = [float(x) for x in value]
    except (TypeError, ValueError):
        raise TalInputError(f"{where}: segment must hold two numbers, got {value!r}") from None
    if not all(math.isfinite(x) for x in numbers):
        raise TalInputError(f"{where}: segment {value!r} is not finite")


def _parse_score(value: Any, where: str) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise TalInputError(f"{where}: score must be a number, got {value!r}") from None
    if not math.isfinite(score):
        raise TalInputError(f"{where}: score {value!r} is not finite")
    return score


@dataclass
class GroundingPrediction:
    """One query of a grounding prediction file: its ranked moments and, if given, its ground truth."""

    video: str
    query: str
    segment: tuple[float, float] | None  # ground truth, seconds
    moments: np.ndarray  # [K, 2] seconds, best first
    lineno: int


def read_grounding_predictions(path: str | Path, need_segment: bool = False) -> list[GroundingPrediction]:
    """Load grounding predictions from JSONL; `need_segment` when no separate ground truth is given."""
    return parse_grounding_predictions(iter_jsonl(path), str(path), need_segment)


def parse_grounding_predictions(lines: Iterable[tuple[int, dict]], source: str = "predictions",
                                need_segment: bool = False) -> list[GroundingPrediction]:
    """Validate `(line number, object)` pairs. Moments `[s, e, score]` are stably sorted by score,
    highest first (a no-op for files that follow the contract); `[s, e]` pairs keep their order."""
    out: list[GroundingPrediction] = []
    for lineno, obj in lines:
        where = f"{source}:{lineno}"
        video = require(obj, "video", where)
        query = require(obj, "query", where)
        segment = obj.get("segment")
        if segment is not None:
            segment = parse_segment(segment, f"{where}: 'segment'")
        elif need_segment:
            raise TalInputError(f"{where}: missing key 'segment' (the ground truth; or give --gt GT.jsonl)")
        moments = _parse_moments(require(obj, "moments", where), where)
        out.append(GroundingPrediction(str(video), str(query), segment, moments, lineno))
    if not out:
        raise TalInputError(f"{source}: no queries in the file")
    return out


def _parse_moments(value: Any, where: str) -> np.ndarray:
    if not isinstance(value, list):
        raise TalInputError(f"{where}: 'moments' must be a list of [start, end, score], got {type(value).__name__}")
    if not value:
        return np.zeros((0, 2))
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim != 2 or arr.shape[1] not in (2, 3):
        for i, moment in enumerate(value):
            if not isinstance(moment, (list, tuple)) or len(moment) not in (2, 3):
                raise TalInputError(f"{where}: moment {i} must be [start, end, score], got {moment!r}")
            try:
                [float(x) for x in moment]
            except (TypeError, ValueError):
                raise TalInputError(f"{where}: moment {i} must hold numbers, got {moment!r}") from None
        raise TalInputError(f"{where}: moments must all have the same length (all [start, end, score])")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise TalInputError(f"{where}: moment {i} {value[i]!r} is not finite")
    if arr.shape[1] == 3:
        arr = arr[np.argsort(-arr[:, 2], kind="stable")]
    return arr[:, :2]
