"""ActivityNet-1.3 as BSN/BMN ship it: `anet_anno_action.json` + `video_info_new.csv`.

The JSON maps "v_<youtube id>" to {duration_second, duration_frame, feature_frame, annotations}; the
subset of each video (training / validation / testing) is only in the CSV. Loaded here into the
contract records: duration = duration_second, subset from the CSV, videos in the CSV's order,
annotations unchanged (zero-length ones are kept, as the official evaluator keeps them). Ids keep
their "v_"; the official ground truth and prediction files use ids without it, so pass
`strip_prefix="v_"` to `load_detection_annotations` (CLI `--strip-prefix v_`) to match them.
(The official / contract layout is read by `tal.datasets.activitynet.read_activitynet_json`.)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tal.datasets.csvio import PathArg, PathLike, as_paths, read_csv_rows
from tal.datasets.jsonio import parse_segment, read_json, require
from tal.datasets.types import DetectionAnnotations, LoadReport, VideoAnnotation
from tal.errors import TalInputError


def read_bsn_annotations(
    path: PathLike, video_info: PathArg | None = None, report: LoadReport | None = None
) -> DetectionAnnotations:
    """Load BSN/BMN's annotation JSON with the subsets of its `video_info_new.csv` (`video_info`).

    Nothing is dropped or changed, so `report` (taken like every reader's) stays empty.
    """
    path = Path(path)
    csv_paths = as_paths(video_info)
    if len(csv_paths) != 1:
        raise TalInputError(
            f"{path}: BSN/BMN annotations need exactly one video_info_new.csv for the subsets "
            f"(video_info=..., CLI --video-info), got {len(csv_paths)}"
        )
    data = read_json(path)
    if not isinstance(data, dict) or "database" in data:
        raise TalInputError(
            f"{path}: not a BSN/BMN anet_anno_action.json ({{'v_<id>': {{duration_second, annotations}}}}); "
            "an ActivityNet JSON with a 'database' is read with format 'activitynet'"
        )
    rows = read_csv_rows(csv_paths[0], ("video", "subset"), "BSN/BMN's video_info_new.csv")
    listed = {row["video"] for _, row in rows}
    unlisted = [v for v in data if v not in listed]
    if unlisted:
        raise TalInputError(
            f"{path}: {len(unlisted)} video(s) have no row in {csv_paths[0]} (first: {unlisted[0]!r}), so their "
            "subset is unknown; give the video_info_new.csv that came with this file"
        )
    videos: dict[str, VideoAnnotation] = {}
    for lineno, row in rows:
        vid, subset = row["video"], row["subset"].strip()
        where = f"{path}: video {vid!r}"
        if not subset:
            raise TalInputError(f"{csv_paths[0]}:{lineno}: empty subset for video {vid!r}")
        if vid in videos:
            raise TalInputError(f"{csv_paths[0]}:{lineno}: video {vid!r} is listed twice")
        if vid not in data:
            raise TalInputError(
                f"{csv_paths[0]}:{lineno}: video {vid!r} is not in {path}; give the matching annotation file"
            )
        entry = data[vid]
        if not isinstance(entry, dict):
            raise TalInputError(f"{where}: expected an object with duration_second and annotations")
        duration_s = require(entry, "duration_second", where)
        if isinstance(duration_s, bool) or not isinstance(duration_s, (int, float)) or not np.isfinite(duration_s) \
                or duration_s < 0:
            raise TalInputError(f"{where}: duration_second {duration_s!r} is not a non-negative number")
        annotations = entry.get("annotations", [])
        if not isinstance(annotations, list):
            raise TalInputError(f"{where}: 'annotations' must be a list")
        segments = np.empty((len(annotations), 2), dtype=np.float64)  # [N, 2]
        labels = []
        for i, ann in enumerate(annotations):
            awhere = f"{where}, annotation {i}"
            if not isinstance(ann, dict):
                raise TalInputError(f"{awhere}: expected an object with segment and label")
            segments[i] = parse_segment(require(ann, "segment", awhere), awhere)
            labels.append(str(require(ann, "label", awhere)))
        videos[vid] = VideoAnnotation(vid, subset, float(duration_s), segments, labels)
    classes = sorted({label for a in videos.values() for label in a.labels})
    return DetectionAnnotations(videos, classes, str(path))
