"""The detection annotation contract: ActivityNet JSON (`database` of videos with segments)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tal.datasets.jsonio import parse_segment, read_json, require
from tal.datasets.types import DetectionAnnotations, VideoAnnotation
from tal.errors import TalInputError

_KNOWN_KEYS = {"subset", "duration", "annotations"}


def read_activitynet_json(path: str | Path) -> DetectionAnnotations:
    """Load `{"database": {vid: {"subset", "duration", "annotations": [{"segment", "label"}]}}}`.

    Segments may be numbers or numeric strings (G-TAD's thumos_gt.json uses strings). Zero-length
    segments are kept, as the official evaluator keeps them; end < start, NaN and missing keys are
    errors naming the video. Other per-video keys (fps, url, ...) are kept in `extra`.
    """
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise TalInputError(f"{path}: not an ActivityNet annotation file (no top-level 'database' object)")
    videos: dict[str, VideoAnnotation] = {}
    labels_seen: set[str] = set()
    for vid, entry in data["database"].items():
        where = f"{path}: video {vid!r}"
        if not isinstance(entry, dict):
            raise TalInputError(f"{where}: expected an object")
        subset = str(require(entry, "subset", where))
        duration = entry.get("duration")
        if duration is not None:
            try:
                duration = float(duration)
            except (TypeError, ValueError):
                raise TalInputError(f"{where}: duration {duration!r} is not a number") from None
            if not np.isfinite(duration) or duration < 0:
                raise TalInputError(f"{where}: duration {duration!r} is not a non-negative number")
        annotations = entry.get("annotations", [])
        if not isinstance(annotations, list):
            raise TalInputError(f"{where}: 'annotations' must be a list")
        segments = np.empty((len(annotations), 2), dtype=np.float64)
        labels: list[str] = []
        for i, ann in enumerate(annotations):
            awhere = f"{where}, annotation {i}"
            if not isinstance(ann, dict):
                raise TalInputError(f"{awhere}: expected an object")
            segments[i] = parse_segment(require(ann, "segment", awhere), awhere)
            label = require(ann, "label", awhere)
            labels.append(str(label))
        labels_seen.update(labels)
        extra = {k: v for k, v in entry.items() if k not in _KNOWN_KEYS}
        videos[str(vid)] = VideoAnnotation(str(vid), subset, duration, segments, labels, extra)
    return DetectionAnnotations(videos, sorted(labels_seen), str(path))


def activitynet_dict(annotations: DetectionAnnotations, version: str = "tal") -> dict:
    """The contract JSON object for a set of annotations (inverse of `read_activitynet_json`)."""
    database = {}
    for vid, a in annotations.videos.items():
        entry = {"subset": a.subset, "duration": a.duration}
        entry.update(a.extra)
        entry["annotations"] = [
            {"segment": [float(s), float(e)], "label": label} for (s, e), label in zip(a.segments, a.labels)
        ]
        database[vid] = entry
    return {"version": version, "database": database}


def write_activitynet_json(annotations: DetectionAnnotations, path: str | Path, version: str = "tal") -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        json.dump(activitynet_dict(annotations, version), f)
    tmp.replace(path)
