"""The HDF5 feature cache (docs/formats.md, "Feature cache"): one [T, D] dataset per video at the root.

Layout. Each video is a root dataset, float32 (float16 kept if given), with attributes `fps`,
`stride`, `window` (frames) and `duration` (seconds). File attributes record how the file was made
(`backbone`, `weights`, `tal_version`, extraction settings, `created`, `feature_dim`).

Video ids become dataset names with `h5_name`: HDF5 reads '/' as a group separator, so '%', '/'
and NUL are percent-encoded ('a/b' -> 'a%2Fb') and the names '.' and '..' have their dots encoded;
every other id is its own name. `video_id` inverts it.

Crash safety. The final file is never modified in place (a kill inside an HDF5 write can corrupt the
whole file). `FeatureCacheWriter` writes each finished video as its own part file
(`OUT.h5.parts/<safe name>.npy` + `.json`, tmp file + fsync + rename: a part exists only when
complete), then `finalize()` builds `OUT.h5.tmp` from the existing `OUT.h5` plus the parts and
renames it over `OUT.h5`; parts are deleted only after that. Re-running resumes from both.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from tal import __version__
from tal.errors import TalInputError
from tal.tempfiles import remove_stale_temp_files

VIDEO_ATTRS = ("fps", "stride", "window", "duration")
SOURCE_ATTRS = {"source_size": int, "source_mtime_ns": int, "source_sha256": str}  # the video file, when extracted
DIGEST_ATTR = "data_sha256"  # sha256 of the stored array's bytes, written with every video
FORMAT_TAG = "tal-feature-cache/1"
# Settings that change the numbers: a resumed extraction must match the existing file on all of them.
IDENTITY_KEYS = ("backbone", "weights", "fps", "window", "stride", "decoder")


# ----------------------------------------------------------------------------------------------
# Names


def h5_name(video_id: str) -> str:
    """The dataset name of a video id (reversible; see the module docstring)."""
    if not isinstance(video_id, str) or not video_id:
        raise TalInputError(f"video id must be a non-empty string, got {video_id!r}")
    name = video_id.replace("%", "%25").replace("/", "%2F").replace("\x00", "%00")
    if name in (".", ".."):
        name = name.replace(".", "%2E")
    return name


def video_id(name: str) -> str:
    """Inverse of `h5_name`."""
    return re.sub(r"%(25|2F|00|2E)", lambda m: {"25": "%", "2F": "/", "00": "\x00", "2E": "."}[m.group(1)], name)


def part_stem(video_id: str) -> str:
    """A file name for a video's part: readable prefix + hash of the exact id (any id, <= 100 chars)."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", video_id)[:80].lstrip(".")
    digest = hashlib.sha1(video_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{readable}-{digest}"


# ----------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class FeatureMeta:
    """Timing of one video's features (frames at `fps`, the rate after resampling)."""

    fps: float
    stride: int
    window: int
    duration: float
    num_features: int
    dim: int


def feature_times(meta: FeatureMeta) -> np.ndarray:
    """Centre time (s) of each feature: (i*stride + window/2) / fps, float64 [T]."""
    return (np.arange(meta.num_features, dtype=np.float64) * meta.stride + meta.window / 2) / meta.fps


def _native(value: Any) -> Any:
    """HDF5 attribute value -> plain Python (numpy scalars, bytes, small arrays)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_native(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _meta_from_attrs(attrs: Any, shape: tuple[int, ...], where: str) -> FeatureMeta:
    missing = [k for k in VIDEO_ATTRS if k not in attrs]
    if missing:
        raise TalInputError(
            f"{where}: missing attribute(s) {', '.join(missing)} (a tal cache has fps, stride, window and duration "
            f"on every video); if this is a published feature file, convert it with 'tal import-features'"
        )
    try:
        fps, duration = float(attrs["fps"]), float(attrs["duration"])
        stride, window = int(attrs["stride"]), int(attrs["window"])
    except (TypeError, ValueError):
        raise TalInputError(f"{where}: attributes fps/stride/window/duration are not numbers") from None
    if not (np.isfinite(fps) and fps > 0 and stride > 0 and window > 0 and np.isfinite(duration) and duration >= 0):
        raise TalInputError(
            f"{where}: impossible timing attributes fps={fps} stride={stride} window={window} duration={duration}"
        )
    return FeatureMeta(fps, stride, window, duration, int(shape[0]), int(shape[1]))


def open_hdf5(path: Path):
    """An h5py.File opened read-only, or a TalInputError saying why not (missing, not HDF5, truncated)."""
    import h5py

    if not path.exists():
        raise TalInputError(f"{path}: no such file")
    if not path.is_file():
        raise TalInputError(f"{path}: not a file")
    if not h5py.is_hdf5(str(path)):
        raise TalInputError(f"{path}: not an HDF5 file (a tal feature cache is made by 'tal extract-features' "
                            f"or 'tal import-features')")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise TalInputError(
            f"{path}: cannot read this HDF5 file, it is truncated or corrupt ({_h5_reason(exc)}); move it aside "
            f"and re-create it with the command that made it"
        ) from None


def _h5_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


class FeatureCache:
    """Read access to a feature cache; a context manager. Safe to pickle / fork (reopens lazily)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._h5 = None
        self._pid = -1
        self._meta: dict[str, FeatureMeta] = {}
        h5 = self._file()
        self.attrs: dict = {k: _native(v) for k, v in h5.attrs.items()}
        names = list(h5.keys())
        self._names = {video_id(n): n for n in names}
        self.videos: list[str] = sorted(self._names)
        if names:
            self._check_layout(names[0])
        dim = self.attrs.get("feature_dim")
        if isinstance(dim, int) and dim > 0:
            self.feature_dim = dim
        elif self.videos:
            self.feature_dim = self.meta(self.videos[0]).dim
        else:
            self.feature_dim = 0

    def _file(self):
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = open_hdf5(self.path)
            self._pid = os.getpid()
        return self._h5

    def _check_layout(self, name: str) -> None:
        """Fail early on a foreign layout (groups at the root, datasets without tal attributes)."""
        import h5py

        obj = self._file().get(name, getclass=True)
        if obj is not h5py.Dataset:
            inner = list(self._file()[name].keys())[:3]
            hint = ("this is ActivityNet C3D's layout: convert it with "
                    "'tal import-features --format activitynet-c3d'") if "c3d_features" in inner else (
                    "a tal cache has one [T, D] dataset per video at the root")
            raise TalInputError(f"{self.path}: {name!r} is a group (holding {inner}), not a feature dataset; {hint}")
        missing = [k for k in VIDEO_ATTRS if k not in self._file()[name].attrs]
        if missing:
            raise TalInputError(
                f"{self.path}: video {video_id(name)!r} has no {', '.join(missing)} attribute(s): not a tal feature "
                f"cache; if it is a 2D-TAN style file (vid -> [T, D]) convert it with "
                f"'tal import-features --format 2dtan-hdf5 {self.path} --out NEW.h5 --fps F --stride S --window W'"
            )

    def __contains__(self, vid: object) -> bool:
        return vid in self._names

    def __len__(self) -> int:
        return len(self.videos)

    def __enter__(self) -> "FeatureCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_h5"], state["_pid"] = None, -1
        return state

    def _dataset(self, vid: str):
        import h5py

        if vid not in self._names:
            some = ", ".join(repr(v) for v in self.videos[:3])
            raise TalInputError(f"{self.path}: no features for video {vid!r} (the cache holds {len(self.videos)} "
                                f"videos{', e.g. ' + some if some else ''}); extract or import them first")
        obj = self._file().get(self._names[vid])
        if not isinstance(obj, h5py.Dataset):
            raise TalInputError(f"{self.path}: video {vid!r} is an HDF5 group, not a [T, D] dataset")
        return obj

    def meta(self, vid: str) -> FeatureMeta:
        """Timing and shape of a video's features (attributes checked, result cached)."""
        if vid not in self._meta:
            ds = self._dataset(vid)
            where = f"{self.path}: video {vid!r}"
            if ds.ndim != 2 or ds.dtype.kind != "f":
                raise TalInputError(f"{where}: expected a float [T, D] dataset, found {ds.dtype} {ds.shape}")
            meta = _meta_from_attrs(ds.attrs, ds.shape, where)
            if self.__dict__.get("feature_dim") and meta.dim != self.feature_dim:
                raise TalInputError(f"{where}: feature dimension {meta.dim} differs from the file's {self.feature_dim}")
            self._meta[vid] = meta
        return self._meta[vid]

    def features(self, vid: str) -> np.ndarray:
        """float32 [T, D] features of `vid`; TalInputError if missing, unreadable, NaN or Inf."""
        meta = self.meta(vid)
        try:
            arr = self._dataset(vid)[()]
        except OSError as exc:
            raise TalInputError(f"{self.path}: video {vid!r}: cannot read its features, the file is truncated or "
                                f"corrupt ({_h5_reason(exc)})") from None
        finite = np.isfinite(arr)
        if not finite.all():
            bad_rows = np.flatnonzero(~finite.all(axis=1))
            raise TalInputError(
                f"{self.path}: video {vid!r}: {int((~finite).sum())} NaN/Inf values in {bad_rows.size} of "
                f"{meta.num_features} features (first at feature {int(bad_rows[0])}); re-extract this video"
            )
        return arr.astype(np.float32, copy=False)

    def source(self, vid: str) -> dict:
        """What the cache recorded of the video file `vid` was extracted from (size, mtime, sha256); {} if none."""
        attrs = self._dataset(vid).attrs
        return {k: kind(_native(attrs[k])) for k, kind in SOURCE_ATTRS.items() if k in attrs}

    def intact(self, vid: str) -> bool | None:
        """Whether `vid`'s stored data still has its recorded checksum (None: none was recorded)."""
        ds = self._dataset(vid)
        if DIGEST_ATTR not in ds.attrs:
            return None
        try:
            return data_digest(ds[()]) == _native(ds.attrs[DIGEST_ATTR])
        except OSError:
            return False

    def close(self) -> None:
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = None


def open_feature_cache(path: str | Path) -> FeatureCache:
    """Open a cache for reading; clear TalInputError for missing / truncated / non-HDF5 / foreign files."""
    return FeatureCache(path)


# ----------------------------------------------------------------------------------------------
# Writing


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _no_space(exc: BaseException) -> bool:
    """A full disk, as OSError or as h5py reports it (an OSError or RuntimeError mentioning it)."""
    return (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left on device" in str(exc)


def _replace_durably(tmp: Path, final: Path) -> None:
    _fsync_path(tmp)
    os.replace(tmp, final)
    _fsync_path(final.parent)


def _check_item(vid: str, features: np.ndarray, meta: dict, where: str) -> tuple[np.ndarray, dict]:
    arr = np.asarray(features)
    if arr.ndim != 2:
        raise TalInputError(f"{where}: video {vid!r}: features must be [T, D], got shape {arr.shape}")
    if arr.dtype != np.float16:
        arr = arr.astype(np.float32, copy=False)
    missing = [k for k in VIDEO_ATTRS if k not in meta]
    if missing:
        raise TalInputError(f"{where}: video {vid!r}: missing {', '.join(missing)}")
    clean = {"fps": float(meta["fps"]), "stride": int(meta["stride"]), "window": int(meta["window"]),
             "duration": float(meta["duration"])}
    _meta_from_attrs(clean, arr.shape, f"{where}: video {vid!r}")
    clean.update({k: kind(meta[k]) for k, kind in SOURCE_ATTRS.items() if meta.get(k) is not None})
    return arr, clean


def data_digest(arr: np.ndarray) -> str:
    """sha256 of an array's bytes (C order): what `DIGEST_ATTR` records."""
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _root_attrs(attrs: dict, feature_dim: int) -> dict:
    out = {"tal_format": FORMAT_TAG, "tal_version": __version__, "created": _now()}
    out.update({k: v for k, v in attrs.items() if v is not None})
    out["feature_dim"] = int(feature_dim)
    return out


def _build_h5(out: Path, items: Iterable[tuple[str, np.ndarray, dict]], attrs: dict,
              copy_from: Path | None = None) -> int:
    """Write `items` (plus every video of `copy_from` not among them) into `out`.tmp, then rename."""
    tmp = out.with_name(out.name + ".tmp")
    try:
        count = _fill_h5(tmp, out, items, attrs, copy_from)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if _no_space(exc):
            kept = f"{out} is as it was" if out.exists() else f"{out} was not written"
            raise TalInputError(f"{out}: no space left on the device while writing it; {kept} (finished videos "
                                f"stay in {out.name}.parts when extracting): free space and re-run") from None
        raise
    _replace_durably(tmp, out)
    return count


def _fill_h5(tmp: Path, out: Path, items: Iterable[tuple[str, np.ndarray, dict]], attrs: dict,
             copy_from: Path | None) -> int:
    import h5py

    dim = 0
    count = 0
    seen: set[str] = set()
    with h5py.File(tmp, "w") as dst:
        for vid, arr, meta in items:
            name = h5_name(vid)
            if name in dst:
                raise TalInputError(f"{out}: video {vid!r} appears twice")
            if dim and arr.shape[1] != dim:
                raise TalInputError(f"{out}: video {vid!r} has feature dimension {arr.shape[1]}, others have {dim}")
            dim = dim or arr.shape[1]
            ds = dst.create_dataset(name, data=arr)
            for k in (*VIDEO_ATTRS, *SOURCE_ATTRS):
                if k in meta:
                    ds.attrs[k] = meta[k]
            ds.attrs[DIGEST_ATTR] = data_digest(arr)
            seen.add(vid)
            count += 1
        if copy_from is not None and copy_from.exists():
            with open_hdf5(copy_from) as src:
                for name in src.keys():
                    if video_id(name) in seen:
                        continue
                    shape = src[name].shape
                    if len(shape) == 2 and dim and shape[1] != dim:
                        raise TalInputError(f"{copy_from}: video {video_id(name)!r} has feature dimension "
                                            f"{shape[1]}, the new ones have {dim}")
                    dim = dim or (shape[1] if len(shape) == 2 else 0)
                    src.copy(src[name], dst, name=name)
                    count += 1
        for k, v in _root_attrs(attrs, dim or int(attrs.get("feature_dim", 0) or 0)).items():
            dst.attrs[k] = v
    return count


def write_feature_cache(path: str | Path, items: Iterable[tuple[str, np.ndarray, dict]], attrs: dict) -> None:
    """One-shot atomic writer (tmp file + rename): items are (video id, [T, D] array,
    {"fps", "stride", "window", "duration"}); for importers, synthetic data and tests."""
    path = Path(path)
    checked = ((vid, *_check_item(vid, arr, meta, str(path))) for vid, arr, meta in items)
    _build_h5(path, checked, attrs)


def _identity(attrs: dict) -> dict:
    return {k: _native(attrs.get(k)) for k in IDENTITY_KEYS}


def _differences(have: dict, want: dict) -> list[str]:
    return [f"{k}: {have.get(k)!r} (existing) vs {want.get(k)!r} (now)" for k in IDENTITY_KEYS
            if have.get(k) != want.get(k)]


class FeatureCacheWriter:
    """Resumable writer used by `tal extract-features` (crash-safe; see the module docstring).

    Several processes (torchrun ranks) may each hold a writer on the same output and `add` distinct
    videos; exactly one of them calls `finalize` after all are done.
    """

    def __init__(self, path: str | Path, attrs: dict):
        self.path = Path(path)
        self.parts = self.path.with_name(self.path.name + ".parts")
        self.attrs = dict(attrs)
        want = _identity(self.attrs)
        self._existing: set[str] = set()
        self.damaged: list[str] = []  # videos of the existing file whose data no longer has its checksum
        self.sources: dict[str, dict] = {}  # video -> the source file it was extracted from, as recorded
        self._created: str | None = None
        if self.path.exists():
            with self._open_existing() as cache:
                diff = _differences(_identity(cache.attrs), want)
                if diff:
                    raise TalInputError(
                        f"{self.path} was made with other settings ({'; '.join(diff)}); re-run with the same "
                        f"settings to add videos to it, or choose another --out"
                    )
                self.damaged = sorted(vid for vid in cache.videos if cache.intact(vid) is False)
                self._existing = set(cache.videos) - set(self.damaged)
                self.sources = {vid: cache.source(vid) for vid in self._existing}
                self._created = cache.attrs.get("created")
        settings = self.parts / "settings.json"
        if settings.exists():
            try:
                have = json.loads(settings.read_text())
            except (OSError, ValueError):
                have = None
            diff = _differences(have, want) if isinstance(have, dict) else ["settings.json unreadable"]
            if diff:
                raise TalInputError(
                    f"{self.parts} holds videos of an unfinished run with other settings ({'; '.join(diff)}); re-run "
                    f"that command to finish it, or delete {self.parts} to start over"
                )
        else:
            self.parts.mkdir(parents=True, exist_ok=True)
            self._write_atomic(settings, json.dumps(want, sort_keys=True).encode())
        remove_stale_temp_files(self.parts)

    def _open_existing(self) -> "FeatureCache":
        """The existing output; when it cannot be read, the fix that works for an extraction run."""
        try:
            return open_feature_cache(self.path)
        except TalInputError as exc:
            raise TalInputError(f"{exc}. To continue this extraction: mv {self.path} {self.path}.broken and re-run "
                                f"the same command (videos kept in {self.parts.name} are not extracted again; "
                                f"the others are)") from None

    def _write_atomic(self, final: Path, data: bytes) -> None:
        tmp = final.with_name(f"{final.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)

    def _part_records(self) -> Iterator[tuple[str, Path, Path]]:
        """(video id, .npy, .json) of every complete part."""
        if not self.parts.is_dir():
            return
        for npy in sorted(self.parts.glob("*.npy")):
            meta_path = npy.with_suffix(".json")
            if not meta_path.exists():
                continue
            try:
                vid = json.loads(meta_path.read_text())["video"]
            except (OSError, ValueError, KeyError):
                raise TalInputError(f"{meta_path}: unreadable part record; delete it and {npy.name}, then re-run")
            yield vid, npy, meta_path

    def done(self) -> set[str]:
        """Video ids already finished: in the final file (data intact) or in a complete part."""
        return self._existing | {vid for vid, _, _ in self._part_records()}

    def finished_sources(self) -> dict[str, dict]:
        """Every finished video (final file, data intact, and parts) -> its recorded source file (see
        `FeatureCache.source`; {} when none was recorded), the parts read in one pass."""
        out = {vid: self.sources.get(vid, {}) for vid in self._existing}
        for vid, _, meta_path in self._part_records():
            meta = json.loads(meta_path.read_text())
            out[vid] = {k: kind(meta[k]) for k, kind in SOURCE_ATTRS.items() if k in meta}
        return out

    def forget(self, vid: str) -> None:
        """Extract `vid` again: drop its part; the new one replaces the final file's copy at finalize."""
        self._existing.discard(vid)
        for part_vid, npy, meta_path in list(self._part_records()):
            if part_vid == vid:
                meta_path.unlink(missing_ok=True)
                npy.unlink(missing_ok=True)

    def add(self, vid: str, features: np.ndarray, meta: dict) -> None:
        """Store one finished video as a part (atomic: it exists only once complete)."""
        try:
            self._add(vid, features, meta)
        except OSError as exc:
            if not _no_space(exc):
                raise
            raise TalInputError(f"{self.parts}: no space left on the device while saving video {vid!r}; the videos "
                                f"finished before it are kept: free space and re-run the same command") from None

    def _add(self, vid: str, features: np.ndarray, meta: dict) -> None:
        arr, clean = _check_item(vid, features, meta, str(self.path))
        stem = self.parts / part_stem(vid)
        self._write_atomic(stem.with_suffix(".json"), json.dumps({"video": vid, **clean}).encode())
        tmp = stem.with_name(f"{stem.name}.npy.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, stem.with_suffix(".npy"))

    def _load_parts(self) -> Iterator[tuple[str, np.ndarray, dict]]:
        for vid, npy, meta_path in self._part_records():
            try:
                arr = np.load(npy, allow_pickle=False)
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError) as exc:
                raise TalInputError(f"{npy}: unreadable part ({exc}); delete it and re-run to redo {vid!r}") from None
            yield vid, *_check_item(vid, arr, meta, str(npy))

    def finalize(self) -> int:
        """Build the final file from the existing one plus the parts, then remove the parts.

        Returns the number of videos in the final file.
        """
        if self.path.exists() and not any(True for _ in self._part_records()):
            count = len(self._existing)  # nothing new: keep the file as it is
        else:
            attrs = dict(self.attrs)
            attrs["created"] = self._created or _now()
            attrs["updated"] = _now()
            count = _build_h5(self.path, self._load_parts(), attrs, copy_from=self.path)
        if self.parts.is_dir():
            for p in self.parts.iterdir():
                p.unlink()
            self.parts.rmdir()
        return count
