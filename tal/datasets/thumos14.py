"""THUMOS14 detection annotations in their native layouts: official per-class txt and G-TAD CSVs.

(ActionFormer's thumos14.json is already the contract ActivityNet JSON: `read_activitynet_json`.)

- official txt: a folder of `<Class>_{val,test}.txt`, lines `VIDEO START END` in seconds.
- G-TAD CSV: `val_Annotation.csv` / `test_Annotation.csv`, columns video,type,type_idx,start,end,...

Both carry `Ambiguous` segments (marked "ambiguous" by the annotators, ignored by the official
evaluation): dropped by default, kept as the label "Ambiguous" with `keep_ambiguous`. A video left
with no instance is dropped too (video_test_0001292 has only Ambiguous ones), so the defaults give
ActionFormer's set: 200 Validation videos / 3007 instances and 212 Test videos / 3358 instances.
Subsets are named as ActionFormer names them ("Validation", "Test"), from the video id.
Neither layout has durations: they come from video-info CSVs when given (`video_info`), else None.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from tal.datasets.csvio import PathArg, as_paths, open_text, parse_number, read_csv_rows
from tal.datasets.jsonio import parse_segment
from tal.datasets.types import DetectionAnnotations, LoadReport, VideoAnnotation
from tal.errors import TalInputError

AMBIGUOUS = "Ambiguous"
SUBSET_BY_PREFIX = {"video_validation_": "Validation", "video_test_": "Test"}
TXT_SPLITS = ("val", "test")

# One instance as read: (video, label, start_s, end_s, "file:line")
_Instance = tuple[str, str, float, float, str]


def read_thumos14_video_info(paths: PathArg) -> dict[str, tuple[float, float | None]]:
    """Video id -> (duration_s, fps) from video-info CSVs; the first file that lists a video wins.

    Two layouts are recognised by their header:
    - AFSD's `{val,test}_video_info.csv` (video,fps,...,count): duration = count / fps.
    - G-TAD's `thumos14_test_groundtruth.csv` (video-name,...,video-duration,frame-rate,...): one row
      per instance, duration = video-duration. It also lists video_test_0001292, which AFSD's omits.
    """
    info: dict[str, tuple[float, float | None]] = {}
    for path in as_paths(paths):
        header = _csv_header(path)
        if {"video", "fps", "count"} <= header:
            for lineno, row in read_csv_rows(path, ("video", "fps", "count"), "a THUMOS14 video-info CSV"):
                where = f"{path}:{lineno}"
                fps = parse_number(row["fps"], where, "fps", positive=True)
                num_frames = parse_number(row["count"], where, "count", positive=True)
                info.setdefault(row["video"], (num_frames / fps, fps))
        elif {"video-name", "video-duration", "frame-rate"} <= header:
            cols = ("video-name", "video-duration", "frame-rate")
            for lineno, row in read_csv_rows(path, cols, "thumos14_test_groundtruth.csv"):
                where = f"{path}:{lineno}"
                duration_s = parse_number(row["video-duration"], where, "video-duration", positive=True)
                fps = parse_number(row["frame-rate"], where, "frame-rate", positive=True)
                info.setdefault(row["video-name"], (duration_s, fps))
        else:
            raise TalInputError(
                f"{path}: not a THUMOS14 video-info CSV: expected the columns video,fps,count "
                "({val,test}_video_info.csv) or video-name,video-duration,frame-rate (thumos14_test_groundtruth.csv)"
            )
    return info


def read_thumos14_txt(
    path: PathArg,
    video_info: PathArg | None = None,
    keep_ambiguous: bool = False,
    report: LoadReport | None = None,
) -> DetectionAnnotations:
    """Load the official per-class txt files: folders (searched recursively) or single files."""
    paths = as_paths(path)
    files = _txt_files(paths)
    instances: list[_Instance] = []
    for file in files:
        label = file.stem.rsplit("_", 1)[0]
        for lineno, line in open_text(file):
            if not line.strip():
                continue
            where = f"{file}:{lineno}"
            fields = line.split()
            if len(fields) != 3:
                raise TalInputError(f"{where}: expected 'VIDEO START END' (seconds), got {line[:80]!r}")
            start_s, end_s = parse_segment(fields[1:], where)
            instances.append((fields[0], label, start_s, end_s, where))
    return _assemble(instances, ", ".join(map(str, paths)), video_info, keep_ambiguous, report)


def read_thumos14_csv(
    path: PathArg,
    video_info: PathArg | None = None,
    keep_ambiguous: bool = False,
    report: LoadReport | None = None,
) -> DetectionAnnotations:
    """Load G-TAD's `{val,test}_Annotation.csv` (one or several files)."""
    instances: list[_Instance] = []
    paths = as_paths(path)
    for file in paths:
        for lineno, row in read_csv_rows(file, ("video", "type", "start", "end"), "G-TAD's val_Annotation.csv"):
            where = f"{file}:{lineno}"
            start_s, end_s = parse_segment([row["start"], row["end"]], where)
            if not row["type"].strip():
                raise TalInputError(f"{where}: empty 'type' (the class name)")
            instances.append((row["video"], row["type"].strip(), start_s, end_s, where))
    return _assemble(instances, ", ".join(map(str, paths)), video_info, keep_ambiguous, report)


def thumos14_subset(video: str, where: str) -> str:
    """'Validation' or 'Test' from a THUMOS14 video id (video_validation_* / video_test_*)."""
    for prefix, subset in SUBSET_BY_PREFIX.items():
        if video.startswith(prefix):
            return subset
    raise TalInputError(
        f"{where}: video {video!r} is not a THUMOS14 id (video_validation_* or video_test_*), so its subset "
        "is unknown; write other datasets in the ActivityNet JSON contract instead"
    )


def _csv_header(path: Path) -> set[str]:
    for _, line in open_text(path):
        return {c.strip() for c in line.split(",")}
    raise TalInputError(f"{path}: empty file, expected a CSV header")


def _txt_files(paths: list[Path]) -> list[Path]:
    """The `<Class>_{val,test}.txt` files named by `paths` (folders are searched recursively)."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.rglob("*.txt") if f.stem.rsplit("_", 1)[-1] in TXT_SPLITS)
            if not found:
                raise TalInputError(f"{p}: no THUMOS14 annotation files (<Class>_val.txt / <Class>_test.txt) in it")
            files += found
        elif p.is_file():
            if p.suffix != ".txt" or "_" not in p.stem or p.stem.rsplit("_", 1)[-1] not in TXT_SPLITS:
                raise TalInputError(
                    f"{p}: expected a THUMOS14 annotation file named <Class>_val.txt or <Class>_test.txt"
                )
            files.append(p)
        else:
            raise TalInputError(f"{p}: no such file or folder")
    return files


def _assemble(
    instances: list[_Instance],
    source: str,
    video_info: PathArg | None,
    keep_ambiguous: bool,
    report: LoadReport | None,
) -> DetectionAnnotations:
    """Group instances by video, drop Ambiguous ones unless asked, attach durations and fps."""
    info_paths = as_paths(video_info)
    info = read_thumos14_video_info(info_paths) if info_paths else {}
    by_video: dict[str, list[_Instance]] = defaultdict(list)
    num_ambiguous = 0
    for inst in instances:
        if inst[1] == AMBIGUOUS and not keep_ambiguous:
            num_ambiguous += 1
            by_video.setdefault(inst[0], [])
            continue
        by_video[inst[0]].append(inst)
    empty = [v for v, insts in by_video.items() if not insts]
    if report is not None:
        report.drop("Ambiguous instances (keep them with keep_ambiguous / --keep-ambiguous)", num_ambiguous)
        report.drop("video(s) with only Ambiguous instances", len(empty))
    videos: dict[str, VideoAnnotation] = {}
    for video in sorted(v for v, insts in by_video.items() if insts):
        insts = by_video[video]
        subset = thumos14_subset(video, insts[0][4])
        duration_s, fps = None, None
        if info_paths:
            if video not in info:
                raise TalInputError(
                    f"{insts[0][4]}: video {video!r} has no row in {', '.join(map(str, info_paths))}; add a CSV "
                    "that lists it (thumos14_test_groundtruth.csv lists every test video) or give none to write "
                    "duration null"
                )
            duration_s, fps = info[video]
        segments = np.array([[i[2], i[3]] for i in insts], dtype=np.float64)  # [N, 2]
        order = np.lexsort((segments[:, 1], segments[:, 0]))  # by start, then end
        extra = {"fps": fps} if fps is not None else {}
        videos[video] = VideoAnnotation(video, subset, duration_s, segments[order], [insts[i][1] for i in order], extra)
    classes = sorted({label for a in videos.values() for label in a.labels})
    return DetectionAnnotations(videos, classes, source)
