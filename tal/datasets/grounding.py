"""The grounding annotation contract: JSONL, one query a line, `{"video", "duration", "query", "segment"}`.

Also the one rule every native grounding loader applies (2D-TAN's): a query's start is clipped to 0 and
its end to the video duration, and a query left with start >= end is dropped and counted.
"""
from __future__ import annotations

import logging
import math
import os
import re
from typing import Iterable, Sequence

import numpy as np

from tal.datasets.jsonio import iter_jsonl, parse_segment, require, write_jsonl_atomic
from tal.datasets.types import GroundingQuery, LoadReport
from tal.errors import TalInputError

logger = logging.getLogger("tal.datasets")

DROPPED_EMPTY = "queries with start >= end after clipping to the video (2D-TAN drops them)"
CLIPPED_END = "query ends clipped to the video duration"
CLIPPED_START = "query starts clipped to 0"
_WORD = re.compile(r"[^\W_]")  # a letter or digit, in any script


def read_grounding_jsonl(path: str | os.PathLike) -> list[GroundingQuery]:
    """Load a grounding JSONL file, checking every line.

    Each line needs `video` (string), `duration` (> 0 s), `query` (non-empty string) and `segment`
    ([start, end] with 0 <= start < end <= duration). Other keys (e.g. `moments` of a prediction file)
    are ignored.
    """
    queries = []
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        video = require(obj, "video", where)
        if not isinstance(video, str) or not video:
            raise TalInputError(f"{where}: 'video' must be a non-empty string, got {video!r}")
        duration = require(obj, "duration", where)
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not math.isfinite(duration) \
                or duration <= 0:
            raise TalInputError(f"{where}: 'duration' must be a positive number of seconds, got {duration!r}")
        query = require(obj, "query", where)
        if not isinstance(query, str) or not query.strip():
            raise TalInputError(f"{where}: 'query' must be a non-empty string, got {query!r}")
        if not _WORD.search(query):
            raise TalInputError(f"{where}: 'query' {query!r} has no word in it (no letter or digit)")
        start_s, end_s = parse_segment(require(obj, "segment", where), where, allow_zero_length=False)
        if start_s < 0 or end_s > duration:
            raise TalInputError(
                f"{where}: segment [{start_s}, {end_s}] lies outside the video [0, {duration}]; "
                "clip it to the video (tal convert-annotations does)"
            )
        queries.append(GroundingQuery(video, float(duration), query, (start_s, end_s)))
    return queries


def grounding_dict(query: GroundingQuery) -> dict:
    """The contract JSON object of one query (inverse of a line of `read_grounding_jsonl`)."""
    return {
        "video": query.video,
        "duration": float(query.duration),
        "query": query.query,
        "segment": [float(query.segment[0]), float(query.segment[1])],
    }


def write_grounding_jsonl(queries: Iterable[GroundingQuery], path: str | os.PathLike) -> None:
    """Write queries as contract JSONL, atomically (a temporary file renamed over `path`)."""
    write_jsonl_atomic((grounding_dict(q) for q in queries), path)


def clip_queries(
    videos: Sequence[str],
    duration_s: np.ndarray,
    sentences: Sequence[str],
    start_s: np.ndarray,
    end_s: np.ndarray,
    source: str,
    report: LoadReport | None = None,
) -> list[GroundingQuery]:
    """Queries from parallel arrays, after 2D-TAN's rule: clip to [0, duration], drop start >= end.

    Inputs are already checked to be finite. Counts of clipped and dropped queries go to `report`;
    dropped ones are also logged as a warning naming `source`.
    """
    duration_s = np.asarray(duration_s, dtype=np.float64)  # [Q]
    start_in = np.asarray(start_s, dtype=np.float64)  # [Q]
    end_in = np.asarray(end_s, dtype=np.float64)  # [Q]
    start_out = np.maximum(start_in, 0.0)  # [Q]
    end_out = np.minimum(end_in, duration_s)  # [Q]
    keep = start_out < end_out  # [Q]
    num_dropped = int((~keep).sum())
    if report is not None:
        report.drop(DROPPED_EMPTY, num_dropped)
        report.change(CLIPPED_START, int((keep & (start_in < 0)).sum()))
        report.change(CLIPPED_END, int((keep & (end_in > duration_s)).sum()))
    if num_dropped:
        logger.warning("%s: dropped %d of %d %s", source, num_dropped, len(keep), DROPPED_EMPTY)
    return [
        GroundingQuery(videos[i], float(duration_s[i]), sentences[i], (float(start_out[i]), float(end_out[i])))
        for i in np.flatnonzero(keep)
    ]
