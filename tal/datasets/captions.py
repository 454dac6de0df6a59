"""The 2D-TAN JSON of ActivityNet Captions and TACoS: `{vid: {"timestamps", "sentences", ...}}`.

ActivityNet Captions gives `duration` and timestamps in seconds. TACoS gives timestamps in FRAMES with
the video's `fps` and `num_frames`: seconds = frames / fps, duration = num_frames / fps. Both follow
2D-TAN's loaders: start clipped to 0, end clipped to the duration, start >= end dropped (2D-TAN tests
start < end before clipping; on the real files the two orders keep the same queries). Sentences are
stripped of surrounding whitespace; their words are left alone.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from tal.datasets.csvio import PathLike
from tal.datasets.grounding import clip_queries
from tal.datasets.jsonio import read_json, require
from tal.datasets.types import GroundingQuery, LoadReport
from tal.errors import TalInputError


def read_anet_captions(path: PathLike, report: LoadReport | None = None) -> list[GroundingQuery]:
    """Load 2D-TAN's ActivityNet Captions JSON (train.json, val.json = val_1, test.json = val_2)."""
    return _read_caption_json(Path(path), frames=False, report=report)


def read_tacos(path: PathLike, report: LoadReport | None = None) -> list[GroundingQuery]:
    """Load 2D-TAN's TACoS JSON, converting frame timestamps to seconds with each video's fps."""
    return _read_caption_json(Path(path), frames=True, report=report)


def _number(value: Any, where: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TalInputError(f"{where}: {what} must be a finite number, got {value!r}")
    return float(value)


def _read_caption_json(path: Path, frames: bool, report: LoadReport | None) -> list[GroundingQuery]:
    data = read_json(path)
    kind = "TACoS" if frames else "ActivityNet Captions"
    if not isinstance(data, dict):
        raise TalInputError(f"{path}: expected a {kind} JSON object {{video: {{timestamps, sentences, ...}}}}")
    videos: list[str] = []
    sentences: list[str] = []
    times: list[np.ndarray] = []  # per video: [Q_v, 3] start_s, end_s, duration_s
    for vid, entry in data.items():
        where = f"{path}: video {vid!r}"
        if not isinstance(entry, dict):
            raise TalInputError(f"{where}: expected an object with timestamps and sentences")
        if frames:
            fps = _number(require(entry, "fps", where), where, "fps")
            num_frames = _number(require(entry, "num_frames", where), where, "num_frames")
            if fps <= 0 or num_frames <= 0:
                raise TalInputError(f"{where}: fps {fps} and num_frames {num_frames} must be positive")
            unit, duration_s = fps, num_frames / fps
        else:
            unit, duration_s = 1.0, _number(require(entry, "duration", where), where, "duration")
            if duration_s <= 0:
                raise TalInputError(f"{where}: duration {duration_s} must be positive")
        stamps = require(entry, "timestamps", where)
        texts = require(entry, "sentences", where)
        if not isinstance(stamps, list) or not isinstance(texts, list) or len(stamps) != len(texts):
            raise TalInputError(
                f"{where}: 'timestamps' and 'sentences' must be lists of the same length "
                f"(got {len(stamps) if isinstance(stamps, list) else type(stamps).__name__} and "
                f"{len(texts) if isinstance(texts, list) else type(texts).__name__})"
            )
        table = np.empty((len(stamps), 3), dtype=np.float64)  # [Q_v, 3]
        for i, (stamp, text) in enumerate(zip(stamps, texts)):
            qwhere = f"{where}, query {i}"
            if not isinstance(stamp, (list, tuple)) or len(stamp) != 2:
                raise TalInputError(f"{qwhere}: timestamp must be [start, end], got {stamp!r}")
            table[i, 0] = _number(stamp[0], qwhere, "start")
            table[i, 1] = _number(stamp[1], qwhere, "end")
            if not isinstance(text, str) or not text.strip():
                raise TalInputError(f"{qwhere}: sentence must be a non-empty string, got {text!r}")
            sentences.append(text.strip())
            videos.append(str(vid))
        table[:, :2] /= unit
        table[:, 2] = duration_s
        times.append(table)
    table = np.concatenate(times) if times else np.empty((0, 3))  # [Q, 3]
    return clip_queries(videos, table[:, 2], sentences, table[:, 0], table[:, 1], str(path), report)
