"""Videos -> feature cache: decoding in worker processes, batched inference, resumable writing.

Flow: `VideoJob`s are sharded over torchrun ranks, then over DataLoader workers (whole videos per
worker). A worker streams a video's clips (`decode.iter_clips`, memory flat in video length),
preprocesses them with the backbone's CPU `preprocess`, and yields fixed batches of `batch_size`
clips of ONE video, then an end marker (or a failure with its reason). The main process runs the
backbone on each batch, gathers the (small) features of each video and hands finished videos to a
`FeatureCacheWriter` as crash-safe parts. Batches never mix videos and always start at the same
clip, so a video's features do not depend on what else is extracted, or on a resume.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.utils.data

from tal import __version__
from tal.distributed import context_from_env, join_process_group, leave_process_group, resolve_device
from tal.errors import TalInputError
from tal.tempfiles import RunLock


@dataclass(frozen=True)
class VideoJob:
    """One video to extract: its id in the cache and where it is."""

    video_id: str
    path: str


@dataclass(frozen=True)
class ExtractSettings:
    backbone: str
    weights: str | None = None
    fps: float | None = None  # None: the backbone's default rate, or the native rate if it has none
    window: int | None = None  # None: the backbone's default window
    stride: int | None = None  # None: the backbone's default stride, else = window
    batch_size: int = 4
    decoder: str = "auto"
    workers: int = 2
    device: str = "auto"
    overwrite: bool = False  # extract again the videos whose source file changed since they were extracted


@dataclass
class ExtractResult:
    out: Path
    num_videos: int  # videos in the final cache
    num_new: int  # extracted by this run (all ranks)
    num_skipped: int  # already done before this run
    num_failed: int  # failed in this run (all ranks)
    failures: list[dict] = field(default_factory=list)  # {"video", "path", "reason"}
    failures_path: Path | None = None
    rank: int = 0  # torchrun rank of this process (0 alone)


# ----------------------------------------------------------------------------------------------
# Inputs


VIDEO_SUFFIXES = frozenset((".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".mpg", ".mpeg", ".flv", ".wmv",
                            ".3gp", ".ts", ".mts"))


def jobs_from_paths(paths: list[str]) -> list[VideoJob]:
    """Video id = the file name without its last extension (`a/b/clip01.mp4` -> `clip01`).

    A folder stands for the video files directly inside it (by extension, sorted; subfolders are not
    searched); a folder without any is an error naming it.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise TalInputError(f"{p}: a folder with no video files in it ({', '.join(sorted(VIDEO_SUFFIXES))}; "
                                    f"subfolders are not searched): give the files, or --video-list FILE")
            files.extend(found)
        else:
            files.append(p)
    return [VideoJob(p.stem if p.suffix else p.name, str(p)) for p in files]


def read_video_list(path: str | Path) -> list[VideoJob]:
    """Lines `path` or `path<TAB>video_id`; blank lines and lines starting with '#' are skipped.
    Relative paths are relative to the current directory."""
    from tal.datasets.csvio import open_text

    path = Path(path)
    if not path.is_file():
        raise TalInputError(f"{path}: no such video list")
    jobs = []
    for lineno, line in open_text(path):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) > 2 or not fields[0].strip() or (len(fields) == 2 and not fields[1].strip()):
            raise TalInputError(f"{path}:{lineno}: expected 'path' or 'path<TAB>video_id', got {line!r}")
        if len(fields) == 2:
            jobs.append(VideoJob(fields[1].strip(), fields[0].strip()))
        else:
            jobs.extend(jobs_from_paths([fields[0].strip()]))
    return jobs


def check_unique_ids(jobs: list[VideoJob]) -> None:
    """Two videos with one id would overwrite each other in the cache: refuse, listing them."""
    by_id: dict[str, list[str]] = {}
    for job in jobs:
        by_id.setdefault(job.video_id, []).append(job.path)
    dups = {vid: paths for vid, paths in by_id.items() if len(paths) > 1}
    if dups:
        shown = "; ".join(f"{vid!r}: {', '.join(paths)}" for vid, paths in list(dups.items())[:10])
        more = f" (and {len(dups) - 10} more)" if len(dups) > 10 else ""
        raise TalInputError(
            f"{len(dups)} video ids are used by more than one file: {shown}{more}; the id is the file name without "
            f"extension: rename the files or give ids with --video-list lines 'path<TAB>video_id'"
        )


# ----------------------------------------------------------------------------------------------
# Workers


class _ClipStream(torch.utils.data.IterableDataset):
    """Per video: ("clips", job, preprocessed tensor [B, ...]) ..., then ("end", job, meta) or
    ("fail", job, reason). Each DataLoader worker takes every num_workers-th video."""

    def __init__(self, jobs: list[VideoJob], window: int, stride: int, fps: float | None, decoder: str,
                 batch_size: int, preprocess, size: int | None = None):
        self.jobs, self.window, self.stride, self.fps = jobs, window, stride, fps
        self.decoder, self.batch_size, self.preprocess, self.size = decoder, batch_size, preprocess, size

    def __iter__(self) -> Iterator[tuple]:
        info = torch.utils.data.get_worker_info()
        jobs = self.jobs if info is None else self.jobs[info.id::info.num_workers]
        for job in jobs:
            yield from self._video(job)

    def _video(self, job: VideoJob) -> Iterator[tuple]:
        from tal.features import decode

        try:
            if not os.path.exists(job.path):
                raise decode.VideoDecodeError(job.path, "no such file")
            info = decode.probe_video(job.path, self.decoder)
            fps = self.fps or info.fps
            if info.variable_rate:
                print(f"tal extract-features: note: {job.path} has a variable frame rate: frames are sampled by "
                      f"their presentation time at {fps:g} fps", file=sys.stderr)
            num_frames = len(decode.resample_indices(info.num_frames, info.fps, self.fps))
            if len(decode.window_starts(num_frames, self.window, self.stride)) == 0:
                yield ("fail", job, f"shorter than one window ({num_frames} frames at {fps:g} fps < window "
                                    f"{self.window}); use a smaller --window or a higher --fps")
                return
            batch: list = []
            count = 0
            clips = decode.iter_clips(job.path, self.window, self.stride, self.fps, self.decoder, self.size)
            for index, clip in clips:
                if index != count:
                    raise RuntimeError(f"iter_clips yielded clip {index}, expected {count}")
                batch.append(self.preprocess(clip[None]))
                count += 1
                if len(batch) == self.batch_size:
                    yield ("clips", job, torch.cat(batch))
                    batch = []
            if batch:
                yield ("clips", job, torch.cat(batch))
            if count == 0:
                yield ("fail", job, "no complete window could be decoded (truncated video?)")
                return
            yield ("end", job, {"fps": float(fps), "stride": self.stride, "window": self.window,
                                "duration": float(info.duration), "num_features": count,
                                **source_identity(job.path)})
        except Exception as exc:  # one bad video must not stop the others; the reason is reported
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
            yield ("fail", job, str(reason))


def source_identity(path: str, with_hash: bool = True) -> dict:
    """What identifies a video file: size, mtime (ns) and, when `with_hash`, the sha256 of its bytes."""
    from tal.features.weights import sha256_of

    stat = os.stat(path)
    out = {"source_size": int(stat.st_size), "source_mtime_ns": int(stat.st_mtime_ns)}
    if with_hash:
        out["source_sha256"] = sha256_of(path)
    return out


def source_changed(recorded: dict, path: str) -> bool:
    """Whether `path` is not the file a video was extracted from (size, else content when mtime moved);
    False when nothing was recorded (imported features)."""
    if not recorded or not os.path.exists(path):
        return False
    now = source_identity(path, with_hash=False)
    if now["source_size"] != recorded.get("source_size"):
        return True
    if now["source_mtime_ns"] == recorded.get("source_mtime_ns"):
        return False
    return "source_sha256" in recorded and source_identity(path)["source_sha256"] != recorded["source_sha256"]


def _init_worker(worker_id: int) -> None:
    torch.set_num_threads(1)


def _iter_stream(stream: _ClipStream, workers: int) -> Iterator[tuple]:
    workers = min(workers, len(stream.jobs))
    if workers == 0:
        yield from stream
        return
    yield from torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers,
                                           worker_init_fn=_init_worker, prefetch_factor=2)


# ----------------------------------------------------------------------------------------------
# Distributed


# ----------------------------------------------------------------------------------------------
# Main


def resolve_settings(settings: ExtractSettings, spec) -> tuple[float | None, int, int]:
    """(fps, window, stride) after defaults: the backbone's window, stride (else = window) and fps."""
    window = spec.default_window if settings.window is None else settings.window
    default_stride = getattr(spec, "default_stride", None) or window
    stride = default_stride if settings.stride is None else settings.stride
    fps = settings.fps if settings.fps is not None else spec.default_fps
    if window <= 0 or stride <= 0 or (fps is not None and not (math.isfinite(fps) and fps > 0)):
        raise TalInputError(f"--window, --stride and --fps must be positive (got {window}, {stride}, {fps})")
    return fps, window, stride


def extraction_decoder(decoder: str) -> str:
    """The decoder extract-features uses: "auto" means PyAV here (not decord as in `decode`).

    Measured on a 10-minute 320x240 video (tools/bench/bench_extract.py, 2 workers, batch 4): a
    decord decoding worker feeding a slower network keeps growing (whole run, peak PSS: r2plus1d_18
    5481 MB with decord vs 1440 MB with PyAV; handcrafted 1213 vs 755 MB), although both decoders
    are flat when decoding alone. PyAV keeps extraction within 2 GB.
    """
    from tal.features.decode import resolve_decoder

    return "pyav" if decoder == "auto" else resolve_decoder(decoder)


def failures_path(out: Path) -> Path:
    return out.with_name(out.name + ".failures.jsonl")


def extract_features(jobs: list[VideoJob], out: str | Path, settings: ExtractSettings,
                     progress: bool | None = None, on_clips: Callable[[int], None] | None = None) -> ExtractResult:
    """Extract every job into `out` (resuming from a previous run), sharded over torchrun ranks.

    progress: the bar on stderr; None shows it only when stderr is a terminal (never in log files).
    on_clips: called with the number of clips run through the backbone so far (e.g. a web page's bar).

    Bad videos are reported (stderr and `OUT.h5.failures.jsonl`) and never stop the others.
    """
    from tal.features.backbones import build_backbone
    from tal.features.cache import FeatureCacheWriter

    out = Path(out)
    check_unique_ids(jobs)
    if settings.batch_size <= 0:
        raise TalInputError(f"--batch-size must be positive, got {settings.batch_size}")
    if settings.workers < 0:
        raise TalInputError(f"--workers must be >= 0, got {settings.workers}")
    if out.is_dir():
        raise TalInputError(f"--out {out}: a folder; give a file name, e.g. {out / 'features.h5'}")
    if not out.parent.is_dir():
        raise TalInputError(f"--out {out}: folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise TalInputError(f"--out {out}: cannot write in {out.parent}; choose another --out")
    dist = context_from_env()
    device = resolve_device(settings.device, dist)
    decoder = extraction_decoder(settings.decoder)
    backbone = build_backbone(settings.backbone, settings.weights, device)
    spec = backbone.spec
    fps, window, stride = resolve_settings(settings, spec)
    if progress is not False and dist.rank == 0:
        for note in window_notes(spec, window):
            print(f"tal extract-features: note: {note}", file=sys.stderr)
    attrs = {
        "backbone": spec.name, **backbone.weights.attrs(), "tal_version": __version__,
        "fps": float(fps) if fps is not None else "native", "window": window, "stride": stride,
        "decoder": decoder, "feature_dim": spec.feature_dim, "input_size": spec.input_size, "kind": spec.kind,
        "duration_source": "video frame count / native fps",
    }
    lock = RunLock(out, "--out") if dist.rank == 0 else contextlib.nullcontext()  # rank 0 speaks for the run
    with lock:
        writer = FeatureCacheWriter(out, attrs)
        clean = False
        if dist.active:
            join_process_group("nccl" if device.startswith("cuda") else "gloo")
        try:
            if dist.rank == 0 and writer.damaged:
                print(f"tal extract-features: {out}: {len(writer.damaged)} video(s) have damaged data (checksum "
                      f"mismatch): extracting them again: {', '.join(writer.damaged[:5])}", file=sys.stderr)
            _check_sources(jobs, writer, settings.overwrite, out)
            done = writer.done()
            mine = [job for job in jobs[dist.rank::dist.world_size] if job.video_id not in done]
            num_skipped = sum(job.video_id in done for job in jobs)
            fail_log = writer.parts / f"failures.rank{dist.rank}.jsonl"
            local_failures = _run(mine, backbone, writer, fail_log, fps, window, stride, decoder, settings,
                                  progress if dist.rank == 0 else False, on_clips)
            totals = torch.tensor([len(local_failures), len(mine)], dtype=torch.int64)
            if dist.active:
                torch.distributed.all_reduce(totals)  # also a barrier: every rank's parts are written
            result = ExtractResult(out, 0, int(totals[1]) - int(totals[0]), num_skipped, int(totals[0]),
                                   rank=dist.rank)
            if dist.rank == 0:
                result.failures = _gather_failures(writer.parts, dist.world_size)
                result.num_videos = writer.finalize()
                result.failures_path = _write_failures(out, result.failures)
            if dist.active:
                num_videos = torch.tensor([result.num_videos], dtype=torch.int64)
                torch.distributed.broadcast(num_videos, src=0)  # the other ranks wait for the final file
                result.num_videos = int(num_videos[0])
            clean = True
            return result
        finally:
            if dist.active:
                leave_process_group(clean)


def _check_sources(jobs: list[VideoJob], writer, overwrite: bool, out: Path) -> None:
    """A finished video id whose file changed since: refused (naming them), or extracted again with overwrite."""
    finished = writer.finished_sources()
    changed = [job for job in jobs if job.video_id in finished and source_changed(finished[job.video_id], job.path)]
    if changed and not overwrite:
        shown = ", ".join(f"{job.video_id!r} ({job.path})" for job in changed[:5])
        raise TalInputError(f"{out}: {len(changed)} video id(s) were extracted from another file than the one given "
                            f"now: {shown}; pass --overwrite to extract them again, or give them other ids")
    for job in changed:
        writer.forget(job.video_id)


def window_notes(spec, window: int) -> list[str]:
    """What happens to a window the network cannot take as it is (it is resampled, see `Preprocessor`)."""
    if spec.max_frames is not None and window > spec.max_frames:
        return [f"backbone {spec.name} takes at most {spec.max_frames} frames per clip: each {window}-frame window "
                f"is resampled to {spec.max_frames} frames (nearest frame)"]
    if window < spec.min_frames:
        return [f"backbone {spec.name} needs at least {spec.min_frames} frames per clip: each {window}-frame window "
                f"is resampled to {spec.min_frames} frames (frames repeated)"]
    return []


def decode_size(spec) -> int | None:
    """Short side to resize frames to while decoding, when the backbone's preprocessing starts by
    resizing the short side to it anyway (then its own resize is a no-op): frames are resized once,
    not once per window holding them, and held frames are small. None for exact (h, w) resizes."""
    size = getattr(spec, "resize_size", ())
    return int(size[0]) if len(size) == 1 else None


def _run(jobs: list[VideoJob], backbone, writer, fail_log: Path, fps, window, stride, decoder,
         settings: ExtractSettings, progress: bool | None,
         on_clips: Callable[[int], None] | None = None) -> list[dict]:
    """Extract `jobs` into parts; returns this process's failures (also appended to `fail_log`);
    `on_clips` is called with the number of clips run through the backbone so far.

    A decoding worker that dies (killed, out of memory, a crash in FFmpeg) does not stop the run: the
    videos it may have held are decoded again one at a time in a fresh worker, and a video whose worker
    dies then is failed alone; the other videos go on.
    """
    from tqdm import tqdm

    preprocess = getattr(backbone, "preprocessor", backbone.preprocess)
    failures: list[dict] = []
    ended: set[str] = set()  # finished or failed
    bar = tqdm(total=len(jobs), unit="video", file=sys.stderr, disable=None if progress is None else not progress,
               dynamic_ncols=True, desc=f"extract {backbone.spec.name}")
    clips = {"count": 0, "start": time.perf_counter()}

    def fail(log, job: VideoJob, reason: str) -> None:
        record = {"video": job.video_id, "path": job.path, "reason": reason}
        failures.append(record)
        log.write(json.dumps(record) + "\n")
        log.flush()
        ended.add(job.video_id)
        tqdm.write(f"tal extract-features: failed {job.video_id} ({job.path}): {reason}", file=sys.stderr)
        bar.update(1)

    def consume(log, todo: list[VideoJob], workers: int) -> None:
        pending: dict[str, list[np.ndarray]] = {}
        stream = _ClipStream(todo, window, stride, fps, decoder, settings.batch_size, preprocess,
                             decode_size(backbone.spec))
        for kind, job, payload in _iter_stream(stream, workers):
            if kind == "clips":
                pending.setdefault(job.video_id, []).append(backbone(payload).float().numpy())
                clips["count"] += len(payload)
                bar.set_postfix(clips=clips["count"],
                                clips_per_s=f"{clips['count'] / (time.perf_counter() - clips['start']):.2f}")
                if on_clips is not None:
                    on_clips(clips["count"])
                continue
            chunks = pending.pop(job.video_id, [])
            if kind == "end":
                features = np.concatenate(chunks)  # [T, D]
                if features.shape[0] != payload["num_features"]:
                    raise RuntimeError(f"{job.video_id}: {features.shape[0]} features for "
                                       f"{payload['num_features']} clips")
                writer.add(job.video_id, features, payload)
                ended.add(job.video_id)
                bar.update(1)
            else:
                fail(log, job, payload)

    suspects: list[VideoJob] = []
    with bar, fail_log.open("w", encoding="utf-8") as log:
        while True:
            todo = [job for job in jobs if job.video_id not in ended]
            if not todo:
                break
            alone = suspects.pop(0) if suspects else None
            try:
                consume(log, [alone] if alone else todo, min(settings.workers, 1) if alone else settings.workers)
            except RuntimeError as exc:
                if "DataLoader worker" not in str(exc):
                    raise
                reason = str(exc).splitlines()[0]
                if alone is not None:
                    fail(log, alone, f"its decoding worker died while decoding it ({reason})")
                    continue
                shares = min(settings.workers, len(todo))
                suspects = [next(j for j in todo[w::shares] if j.video_id not in ended)
                            for w in range(shares) if any(j.video_id not in ended for j in todo[w::shares])]
                tqdm.write(f"tal extract-features: a decoding worker died ({reason}); decoding "
                           f"{', '.join(j.video_id for j in suspects)} again one at a time", file=sys.stderr)
    return failures


def _gather_failures(parts: Path, world_size: int) -> list[dict]:
    records = []
    for rank in range(world_size):
        path = parts / f"failures.rank{rank}.jsonl"
        if path.exists():
            records += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return sorted(records, key=lambda r: r["video"])


def _write_failures(out: Path, failures: list[dict]) -> Path | None:
    """OUT.h5.failures.jsonl lists this run's failures (removed when there are none)."""
    path = failures_path(out)
    if not failures:
        path.unlink(missing_ok=True)
        return None
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in failures), encoding="utf-8")
    os.replace(tmp, path)
    return path
