"""Charades-STA: `VID START END##sentence` lines (seconds), durations from the Charades CSV.

The lines carry no video length; 2D-TAN takes it from the `length` column of Charades_v1_{train,test}.csv,
clips each end to it and drops queries left with start >= end (4 of the 12408 training lines, all
with end < start in the file). Sentences lose their trailing period, as in 2D-TAN
(`sent.split('.\\n')[0]`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tal.datasets.csvio import PathArg, PathLike, as_paths, open_text, parse_number, read_csv_rows
from tal.datasets.grounding import clip_queries
from tal.datasets.types import GroundingQuery, LoadReport
from tal.errors import TalInputError


def read_charades_durations(paths: PathArg) -> dict[str, float]:
    """Video id -> duration in seconds (`length` column) from one or more Charades CSVs.

    The first file that lists a video wins. Empty `length` fields are left out (a query on such a
    video then fails with the video named).
    """
    durations: dict[str, float] = {}
    for path in as_paths(paths):
        for lineno, row in read_csv_rows(path, ("id", "length"), "the Charades CSV (Charades_v1_train.csv)"):
            if row["id"] not in durations and row["length"].strip():
                durations[row["id"]] = parse_number(row["length"], f"{path}:{lineno}", "length", positive=True)
    return durations


def read_charades_sta(
    path: PathLike, video_info: PathArg | None = None, report: LoadReport | None = None
) -> list[GroundingQuery]:
    """Load a Charades-STA txt file; `video_info` is the Charades CSV (or several) giving durations."""
    path = Path(path)
    csv_paths = as_paths(video_info)
    if not csv_paths:
        raise TalInputError(
            f"{path}: Charades-STA lines carry no video durations: give the Charades CSV with the `length` "
            "column (video_info=Charades_v1_train.csv, or --durations on the command line)"
        )
    durations = read_charades_durations(csv_paths)
    videos: list[str] = []
    sentences: list[str] = []
    times: list[tuple[float, float, float]] = []  # start_s, end_s, duration_s
    for lineno, line in open_text(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        head, sep, sentence = line.partition("##")
        fields = head.split()
        if not sep or len(fields) != 3:
            raise TalInputError(f"{where}: expected 'VIDEO START END##sentence', got {line[:80]!r}")
        video, start_text, end_text = fields
        sentence = sentence.strip()
        if sentence.endswith("."):
            sentence = sentence[:-1].rstrip()
        if not sentence:
            raise TalInputError(f"{where}: empty sentence after '##'")
        if video not in durations:
            raise TalInputError(
                f"{where}: video {video!r} has no duration in {', '.join(map(str, csv_paths))}; "
                "give the Charades CSV of the same split (Charades_v1_train.csv or Charades_v1_test.csv)"
            )
        start_s = parse_number(start_text, where, "start")
        end_s = parse_number(end_text, where, "end")
        videos.append(video)
        sentences.append(sentence)
        times.append((start_s, end_s, durations[video]))
    table = np.asarray(times, dtype=np.float64).reshape(-1, 3)  # [Q, 3] start_s, end_s, duration_s
    return clip_queries(videos, table[:, 2], sentences, table[:, 0], table[:, 1], str(path), report)
