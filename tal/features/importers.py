"""Published feature sets -> a tal feature cache (`tal import-features`).

Source layouts (checked against the loaders of the projects that publish them):
- `2dtan-hdf5`: one HDF5 file, a root dataset per video, `vid -> [T, D]` (2D-TAN's TACoS
  `tall_c3d_features.hdf5` [T, 4096], Charades `vgg_rgb_features.hdf5` [T, 4096]).
- `activitynet-c3d`: one HDF5 file, a group per video holding `c3d_features` [T, 500]
  (`sub_activitynet_v1-3.c3d.hdf5`, ids `v_<youtube id>`; C3D over 16 frames every 8 frames).
- `npy-dir`: a folder with one file per video, named `<video id>.npy|.npz|.pt` (ActionFormer,
  OpenTAD, TriDet...). All these releases store [T, D] (ActionFormer THUMOS14 I3D: [T, 2048], 16-frame
  clips every 4 frames at 30 fps; OpenTAD transposes "t c -> c t" after loading); `--transpose`
  reads [D, T] files. `.npz`: the single array, else `--key`, else `feats` (ActionFormer's EPIC
  files); `.pt`: a tensor, or a dict of tensors picked the same way. Arrays [T, 1, 1, D] are squeezed.

Timing is not stored in these files: `--fps`, `--stride` and `--window` say how they were made.
Durations come from `--durations FILE` when given, else ((T-1)*stride + window) / fps, the end of
the last window. `--fps durations` derives a per-video rate from the durations instead, for sets
whose videos were sampled at their own rates: fps = ((T-1)*stride + window) / duration.
`--video-info FILE` (an ActivityNet-style JSON whose videos carry `fps` and `duration`, as
ActionFormer's thumos14.json) gives each video its own frame rate and duration instead of `--fps`:
THUMOS14 holds videos at 30, 29.97, 25 and 24 fps, and ActionFormer's loader reads each one's.
"""
from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from tal.datasets.jsonio import read_json
from tal.errors import TalInputError

FORMATS = ("2dtan-hdf5", "activitynet-c3d", "npy-dir")
FPS_FROM_DURATIONS = "durations"
_ARRAY_SUFFIXES = (".npy", ".npz", ".pt", ".pth")


@dataclass
class ImportSummary:
    out: Path
    num_videos: int
    feature_dim: int
    duration_source: str
    nonfinite: list[str] = field(default_factory=list)  # videos holding NaN/Inf (imported as they are)
    empty: list[str] = field(default_factory=list)  # videos with zero features
    skipped: list[str] = field(default_factory=list)  # not imported, with the reason


# ----------------------------------------------------------------------------------------------
# Sources


def _as_2d(arr: np.ndarray, where: str, transpose: bool) -> np.ndarray:
    """[T, D] from a 2-D array, or an [T, 1, ..., 1, D] one; transposed first if asked."""
    arr = np.asarray(arr)
    if arr.ndim > 2 and all(n == 1 for n in arr.shape[1:-1]):
        arr = arr.reshape(arr.shape[0], arr.shape[-1])
    if arr.ndim != 2:
        raise TalInputError(f"{where}: expected a [T, D] array, got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise TalInputError(f"{where}: expected numbers, got dtype {arr.dtype}")
    return arr.T if transpose else arr


def _pick(arrays: dict, key: str | None, where: str):
    if key is not None:
        if key not in arrays:
            raise TalInputError(f"{where}: no array named {key!r} (has {sorted(arrays)})")
        return arrays[key]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    if "feats" in arrays:
        return arrays["feats"]
    raise TalInputError(f"{where}: holds several arrays {sorted(arrays)}; choose one with --key")


def iter_hdf5(src: Path, key: str | None) -> Iterator[tuple[str, np.ndarray]]:
    """(video, array) from `vid -> [T, D]` or, with `key`, `vid/key -> [T, D]`."""
    import h5py

    from tal.features.cache import open_hdf5

    with open_hdf5(src) as h5:
        for vid in h5.keys():
            obj = h5[vid]
            if isinstance(obj, h5py.Group):
                if key is None:
                    inner = sorted(obj.keys())
                    hint = " (use --format activitynet-c3d)" if "c3d_features" in inner else ""
                    raise TalInputError(f"{src}: {vid!r} is a group holding {inner[:5]}, not a [T, D] dataset; "
                                        f"name the dataset inside with --key{hint}")
                if key not in obj:
                    raise TalInputError(f"{src}: video {vid!r} has no {key!r} (has {sorted(obj.keys())[:5]})")
                obj = obj[key]
            elif key is not None:
                raise TalInputError(f"{src}: {vid!r} is a dataset, not a group holding {key!r}; drop --key")
            yield vid, obj[()]


def _load_file(path: Path, key: str | None) -> np.ndarray:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return _pick({k: npz[k] for k in npz.files}, key, str(path))
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            obj = _pick(obj, key, str(path))
        if not isinstance(obj, torch.Tensor):
            raise TalInputError(f"{path}: expected a tensor (or a dict of tensors), got {type(obj).__name__}")
        return obj.detach().float().numpy() if obj.dtype == torch.bfloat16 else obj.detach().numpy()
    except TalInputError:
        raise
    except Exception as exc:  # numpy / torch report unreadable files in many ways
        raise TalInputError(f"{path}: cannot read it ({type(exc).__name__}: {exc})") from None


def iter_npy_dir(src: Path, key: str | None) -> Iterator[tuple[str, np.ndarray]]:
    """(file stem, array) for every .npy / .npz / .pt / .pth file directly in `src`."""
    if not src.is_dir():
        raise TalInputError(f"{src}: not a folder (--format npy-dir reads a folder of per-video files)")
    files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in _ARRAY_SUFFIXES)
    if not files:
        raise TalInputError(f"{src}: no .npy, .npz or .pt files")
    stems: dict[str, Path] = {}
    for p in files:
        if p.stem in stems:
            raise TalInputError(f"{src}: two files for video {p.stem!r}: {stems[p.stem].name} and {p.name}")
        stems[p.stem] = p
    for p in files:
        yield p.stem, _load_file(p, key)


# ----------------------------------------------------------------------------------------------
# Durations


def _duration(value: object, where: str) -> float:
    try:
        d = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TalInputError(f"{where}: duration {value!r} is not a number") from None
    if not np.isfinite(d) or d <= 0:
        raise TalInputError(f"{where}: duration {value!r} must be a positive number of seconds")
    return d


def _video_entries(path: Path) -> dict:
    """The per-video objects of an ActivityNet-style JSON (`{"database": {vid: ...}}` or `{vid: ...}`)."""
    data = read_json(path)
    db = data.get("database", data) if isinstance(data, dict) else None
    if not isinstance(db, dict):
        raise TalInputError(f"{path}: expected a JSON object of videos (ActivityNet 'database' style)")
    return db


def read_durations(path: str | Path) -> dict[str, float]:
    """Seconds per video from an ActivityNet-style JSON (`{"database": {vid: {"duration"}}}`, or
    `{vid: {"duration"}}` as in 2D-TAN's caption files) or a CSV `video,duration` (header optional)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        out = {}
        for vid, entry in _video_entries(path).items():
            value = entry.get("duration") if isinstance(entry, dict) else entry
            if value is None:
                raise TalInputError(f"{path}: video {vid!r} has no duration")
            out[str(vid)] = _duration(value, f"{path}: video {vid!r}")
        return out
    if not path.is_file():
        raise TalInputError(f"{path}: no such durations file")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except UnicodeDecodeError:
        raise TalInputError(f"{path}: not UTF-8 text; save the durations file as UTF-8") from None
    if not rows:
        raise TalInputError(f"{path}: empty durations file")
    vid_col, dur_col = 0, 1
    header = [c.strip().lower() for c in rows[0]]
    if "duration" in header:
        dur_col = header.index("duration")
        vid_col = header.index("video") if "video" in header else 0
        rows = rows[1:]
    else:
        try:
            float(rows[0][1])
        except (IndexError, ValueError):
            rows = rows[1:]  # some other header
    out = {}
    for lineno, row in enumerate(rows, 2):
        if len(row) <= max(vid_col, dur_col):
            raise TalInputError(f"{path}: row {row!r}: expected 'video,duration'")
        out[row[vid_col].strip()] = _duration(row[dur_col], f"{path}: video {row[vid_col].strip()!r}")
    return out


def read_video_info(path: str | Path) -> dict[str, tuple[float, float]]:
    """(fps, duration in seconds) per video from an ActivityNet-style JSON whose entries carry both."""
    path = Path(path)
    out = {}
    for vid, entry in _video_entries(path).items():
        if not isinstance(entry, dict) or entry.get("fps") is None or entry.get("duration") is None:
            raise TalInputError(f"{path}: video {vid!r} needs both 'fps' and 'duration' for --video-info; use an "
                                f"annotation file that records them (e.g. ActionFormer's thumos14.json) or --fps")
        fps = _duration(entry["fps"], f"{path}: video {vid!r} fps")
        out[str(vid)] = (fps, _duration(entry["duration"], f"{path}: video {vid!r}"))
    return out


# ----------------------------------------------------------------------------------------------
# Import


def check_output_file(out: Path, flag: str, overwrite: bool) -> None:
    """Refuse, before any work, an output that is a folder, lies in a missing folder, or exists (unless
    `overwrite`): a one-line error naming the flag and the fix."""
    if out.is_dir():
        raise TalInputError(f"{flag} {out}: a folder; give a file name, e.g. {out / 'features.h5'}")
    if not out.parent.is_dir():
        raise TalInputError(f"{flag} {out}: folder {out.parent} does not exist; create it first")
    if out.exists() and not overwrite:
        raise TalInputError(f"{flag} {out} exists already; choose another {flag}, or pass --overwrite to replace it")


def import_features(fmt: str, src: str | Path, out: str | Path, fps: float | str | None, stride: int | None,
                    window: int | None, durations: str | Path | None = None, key: str | None = None,
                    transpose: bool = False, strip_prefix: str | None = None,
                    backbone: str | None = None, video_info: str | Path | None = None,
                    overwrite: bool = False) -> ImportSummary:
    """Convert `src` (layout `fmt`) into the feature cache `out` (written atomically); with `video_info`
    each video's fps and duration come from that file (`read_video_info`). An existing `out` is refused
    unless `overwrite`; videos with zero features are left out (listed on stderr)."""
    from tal.features.cache import write_feature_cache

    src, out = Path(src), Path(out)
    check_output_file(out, "--out", overwrite)
    if fmt not in FORMATS:
        raise TalInputError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "activitynet-c3d":
        key = key or "c3d_features"
        stride, window = stride or 8, window or 16
    if video_info is not None and (fps is not None or durations is not None):
        raise TalInputError("--video-info gives every video its fps and duration: drop --fps and --durations")
    info = read_video_info(video_info) if video_info is not None else None
    if info is not None:
        fps = "video-info"
    if stride is None or window is None or fps is None:
        raise TalInputError("--fps, --stride and --window are required: they say how the features were made, "
                            "e.g. ActionFormer's THUMOS14 I3D: --fps 30 --stride 4 --window 16")
    if stride <= 0 or window <= 0:
        raise TalInputError(f"--stride and --window must be positive, got {stride} and {window}")
    per_video_fps = fps == FPS_FROM_DURATIONS
    if info is None and not per_video_fps:
        try:
            fps = float(fps)  # type: ignore[arg-type]
        except ValueError:
            raise TalInputError(f"--fps must be a number or '{FPS_FROM_DURATIONS}', got {fps!r}") from None
        if not np.isfinite(fps) or fps <= 0:
            raise TalInputError(f"--fps must be positive, got {fps}")
    if per_video_fps and durations is None:
        raise TalInputError("--fps durations needs --durations FILE")
    table = read_durations(durations) if durations is not None else None
    if info is not None:
        table = {vid: duration for vid, (_, duration) in info.items()}
        duration_source = f"from {Path(video_info).name}"  # type: ignore[arg-type]
    elif table is not None:
        duration_source = f"from {Path(durations).name}"  # type: ignore[arg-type]
    else:
        duration_source = "computed as ((T-1)*stride + window) / fps"
    source = iter_npy_dir(src, key) if fmt == "npy-dir" else iter_hdf5(src, key)
    summary = ImportSummary(out, 0, 0, duration_source)

    def items() -> Iterator[tuple[str, np.ndarray, dict]]:
        missing: list[str] = []
        for raw_id, raw in source:
            vid = raw_id[len(strip_prefix):] if strip_prefix and raw_id.startswith(strip_prefix) else raw_id
            arr = _as_2d(raw, f"{src}: video {raw_id!r}", transpose)
            num = arr.shape[0]
            if summary.feature_dim and arr.shape[1] != summary.feature_dim:
                raise TalInputError(
                    f"{src}: video {raw_id!r} has shape {arr.shape}, earlier videos have dimension "
                    f"{summary.feature_dim}; if the files store [D, T], pass --transpose")
            summary.feature_dim = arr.shape[1]
            if table is not None:
                duration = table.get(vid, table.get(raw_id))
                if duration is None:
                    missing.append(raw_id)
                    continue
            if info is not None:
                video_fps = info.get(vid, info.get(raw_id, (0.0, 0.0)))[0]
            elif per_video_fps:
                if num == 0:
                    summary.skipped.append(f"{vid}: zero features, no rate can be derived")
                    continue
                video_fps = ((num - 1) * stride + window) / duration
            else:
                video_fps = fps
                if table is None:
                    duration = ((num - 1) * stride + window) / video_fps if num else 0.0
            if num == 0:  # nothing to train or search on: a head would fail on it later
                summary.empty.append(vid)
                continue
            if not np.isfinite(arr).all():
                summary.nonfinite.append(vid)
            summary.num_videos += 1
            yield vid, arr, {"fps": video_fps, "stride": stride, "window": window, "duration": duration}
        if missing:
            raise TalInputError(
                f"{video_info or durations}: no duration for {len(missing)} videos "
                f"(e.g. {', '.join(map(repr, missing[:3]))}); "
                f"fix the ids (e.g. --strip-prefix v_) or leave out --durations to compute them")
        if summary.num_videos == 0:
            raise TalInputError(f"{src}: no videos found")

    attrs = {
        "backbone": backbone or "unknown", "weights": "unknown", "source": str(src), "import_format": fmt,
        "fps": FPS_FROM_DURATIONS if per_video_fps else fps, "stride": stride, "window": window,
        "duration_source": duration_source,
    }
    write_feature_cache(out, items(), attrs)
    for kind, videos in (("contain NaN/Inf", summary.nonfinite),
                         ("have zero features and were left out", summary.empty),
                         ("were skipped", summary.skipped)):
        if videos:
            print(f"tal import-features: warning: {len(videos)} videos {kind}: {', '.join(videos[:5])}"
                  f"{' ...' if len(videos) > 5 else ''}", file=sys.stderr)
    return summary
