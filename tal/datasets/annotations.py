"""One entry point for every annotation format tal reads, with a registry by name and sniffing.

    load_detection_annotations(path, format="auto", **options) -> DetectionAnnotations
    load_grounding_queries(path, format="auto", **options) -> list[GroundingQuery]

`format="auto"` looks at the file (or folder) to tell the format. Options common to all formats:
`report` (a `LoadReport` to fill with what was dropped or changed) and `strip_prefix` (remove this
prefix from video ids, e.g. "v_"); detection also takes `subset` (keep only that subset). Any other
option goes to the format's reader (`video_info`, `keep_ambiguous`): see `FORMATS`.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tal.datasets.activitynet import read_activitynet_json
from tal.datasets.activitynet13 import read_bsn_annotations
from tal.datasets.captions import read_anet_captions, read_tacos
from tal.datasets.charades_sta import read_charades_sta
from tal.datasets.csvio import PathArg, as_paths
from tal.datasets.grounding import read_grounding_jsonl
from tal.datasets.jsonio import read_json
from tal.datasets.thumos14 import read_thumos14_csv, read_thumos14_txt
from tal.datasets.types import DetectionAnnotations, GroundingQuery, LoadReport, VideoAnnotation
from tal.errors import TalInputError


@dataclass(frozen=True)
class AnnotationFormat:
    """A readable annotation format: its task, its reader and the options the reader takes.

    (`tal convert-annotations --help` describes each format in a line; the readers' modules in full.)
    """

    name: str
    task: str  # "detection" or "grounding"
    read: Callable
    options: frozenset[str]  # reader keyword options besides `report`
    many_files: bool  # True: several paths form one set (per-class txt, per-split CSVs); False: one path each


# The contract readers drop and change nothing, so they leave `report` empty.
def _contract_json(path: PathArg, report: LoadReport | None = None) -> DetectionAnnotations:
    return read_activitynet_json(path)  # type: ignore[arg-type]


def _contract_jsonl(path: PathArg, report: LoadReport | None = None) -> list[GroundingQuery]:
    return read_grounding_jsonl(path)  # type: ignore[arg-type]


FORMATS: dict[str, AnnotationFormat] = {f.name: f for f in [
    # ActivityNet JSON: the contract, official ActivityNet-1.3, G-TAD's thumos_gt.json, ActionFormer's thumos14.json
    AnnotationFormat("activitynet", "detection", _contract_json, frozenset(), False),
    AnnotationFormat("thumos14-actionformer", "detection", _contract_json, frozenset(), False),
    AnnotationFormat("activitynet-bsn", "detection", read_bsn_annotations, frozenset({"video_info"}), False),
    AnnotationFormat("thumos14-txt", "detection", read_thumos14_txt, frozenset({"video_info", "keep_ambiguous"}), True),
    AnnotationFormat("thumos14-csv", "detection", read_thumos14_csv, frozenset({"video_info", "keep_ambiguous"}), True),
    AnnotationFormat("jsonl", "grounding", _contract_jsonl, frozenset(), False),
    AnnotationFormat("charades-sta", "grounding", read_charades_sta, frozenset({"video_info"}), False),
    AnnotationFormat("anet-captions", "grounding", read_anet_captions, frozenset(), False),
    AnnotationFormat("tacos", "grounding", read_tacos, frozenset(), False),
]}
DETECTION_FORMATS = [n for n, f in FORMATS.items() if f.task == "detection"]
GROUNDING_FORMATS = [n for n, f in FORMATS.items() if f.task == "grounding"]

_CHARADES_LINE = re.compile(r"^\S+ +[-+0-9.eE]+ +[-+0-9.eE]+ *##")
_THUMOS_TXT_NAME = re.compile(r"^.+_(val|test)\.txt$")


def sniff_format(path: str | os.PathLike) -> str:
    """The name of the format of a file or folder, by its content; a clear error when unknown."""
    path = Path(path)
    if path.is_dir():
        if any(_THUMOS_TXT_NAME.match(f.name) for f in path.rglob("*.txt")):
            return "thumos14-txt"
        raise TalInputError(f"{path}: a folder, but with no THUMOS14 <Class>_{{val,test}}.txt files; pass --format")
    if not path.is_file():
        raise TalInputError(f"{path}: no such file")
    with path.open("rb") as f:
        first = f.readline(1 << 20).decode("utf-8", errors="replace").strip()
    if path.suffix == ".jsonl":
        return "jsonl"
    if first.startswith("{") and first.endswith("}"):
        try:
            obj = json.loads(first)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and "query" in obj:
            return "jsonl"
    if first.startswith("{"):
        return _sniff_json(path)
    if _CHARADES_LINE.match(first):
        return "charades-sta"
    header = {c.strip() for c in first.split(",")}
    if {"video", "type", "start", "end"} <= header:
        return "thumos14-csv"
    if _THUMOS_TXT_NAME.match(path.name) and len(first.split()) == 3:
        return "thumos14-txt"
    raise TalInputError(f"{path}: cannot tell its annotation format; pass one of: {', '.join(FORMATS)}")


def _sniff_json(path: Path) -> str:
    data = read_json(path)
    if isinstance(data, dict) and isinstance(data.get("database"), dict):
        return "activitynet"
    if isinstance(data, dict) and "results" in data:
        raise TalInputError(f"{path}: a predictions file (top-level 'results'), not annotations")
    entry = next(iter(data.values()), None) if isinstance(data, dict) else None
    if isinstance(entry, dict):
        if "duration_second" in entry:
            return "activitynet-bsn"
        if "timestamps" in entry and "sentences" in entry:
            return "tacos" if "fps" in entry and "num_frames" in entry else "anet-captions"
    raise TalInputError(f"{path}: a JSON file of no known annotation layout; pass one of: {', '.join(FORMATS)}")


def resolve_format(path: PathArg, format: str, task: str) -> AnnotationFormat:
    """The registry entry for `format` (sniffed from the first path when "auto"), checked against the task."""
    if format == "auto":
        paths = as_paths(path)
        if not paths:
            raise TalInputError("no annotation file given")
        format = sniff_format(paths[0])
    if format not in FORMATS:
        raise TalInputError(f"unknown annotation format {format!r}; known: {', '.join(FORMATS)}")
    fmt = FORMATS[format]
    if fmt.task != task:
        verb = "load_grounding_queries" if fmt.task == "grounding" else "load_detection_annotations"
        raise TalInputError(f"{path}: format {format!r} holds {fmt.task} annotations, not {task}; use {verb}")
    return fmt


def _check_options(fmt: AnnotationFormat, options: dict) -> None:
    unknown = sorted(set(options) - fmt.options)
    if unknown:
        takes = ", ".join(sorted(fmt.options)) or "none"
        raise TalInputError(f"format {fmt.name!r} takes no option {', '.join(unknown)} (its options: {takes})")


def load_detection_annotations(
    path: PathArg,
    format: str = "auto",
    *,
    subset: str | None = None,
    strip_prefix: str | None = None,
    report: LoadReport | None = None,
    **options,
) -> DetectionAnnotations:
    """Detection / proposal annotations from any supported format (one path, or several merged).

    Several paths of a one-file format are loaded one by one and merged; a video in two of them is
    an error. `subset` keeps one subset (an unknown one is an error listing those present).
    """
    fmt = resolve_format(path, format, "detection")
    _check_options(fmt, options)
    paths = as_paths(path)
    if not paths:
        raise TalInputError("no annotation file given")
    if fmt.many_files:
        annotations = fmt.read(paths, report=report, **options)
    else:
        annotations = merge_detection([fmt.read(p, report=report, **options) for p in paths])
    if strip_prefix:
        annotations = _strip_detection(annotations, strip_prefix)
    if subset is not None:
        if subset not in annotations.subsets():
            raise TalInputError(
                f"{annotations.source}: no video has subset {subset!r}; subsets present: "
                f"{', '.join(annotations.subsets()) or 'none'}"
            )
        annotations = annotations.subset(subset)
    return annotations


def load_grounding_queries(
    path: str | os.PathLike,
    format: str = "auto",
    *,
    strip_prefix: str | None = None,
    report: LoadReport | None = None,
    **options,
) -> list[GroundingQuery]:
    """Grounding queries from any supported format (one file: one split)."""
    fmt = resolve_format(path, format, "grounding")
    _check_options(fmt, options)
    queries = fmt.read(Path(path), report=report, **options)
    if strip_prefix:
        n = len(strip_prefix)
        queries = [GroundingQuery(q.video[n:] if q.video.startswith(strip_prefix) else q.video, q.duration, q.query,
                                  q.segment) for q in queries]
    return queries


def merge_detection(parts: list[DetectionAnnotations]) -> DetectionAnnotations:
    """One annotation set from several with disjoint videos (a video in two is an error naming both files)."""
    if len(parts) == 1:
        return parts[0]
    videos: dict[str, VideoAnnotation] = {}
    owner: dict[str, str] = {}
    for part in parts:
        for vid, a in part.videos.items():
            if vid in videos:
                raise TalInputError(f"video {vid!r} is in both {owner[vid]} and {part.source}; give each video once")
            videos[vid], owner[vid] = a, part.source
    classes = sorted({c for part in parts for c in part.classes})
    return DetectionAnnotations(videos, classes, ", ".join(p.source for p in parts))


def _strip_detection(annotations: DetectionAnnotations, prefix: str) -> DetectionAnnotations:
    """The same set with `prefix` removed from the video ids that start with it."""
    videos: dict[str, VideoAnnotation] = {}
    for vid, a in annotations.videos.items():
        new = vid[len(prefix):] if vid.startswith(prefix) else vid
        if new in videos:
            raise TalInputError(f"{annotations.source}: stripping {prefix!r} makes two videos named {new!r}")
        videos[new] = VideoAnnotation(new, a.subset, a.duration, a.segments, a.labels, a.extra)
    return DetectionAnnotations(videos, annotations.classes, annotations.source)
