"""Videos given to `tal serve` by upload: saved under one folder, checked against size and duration
limits, extracted with the checkpoint's recorded settings one at a time in a worker thread (the page polls
the progress), then answerable by id like the cached videos, and kept for the next start."""
from __future__ import annotations

import queue
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tal.errors import TalInputError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 500 * 2**20
    max_duration_s: float = 1800.0

    def to_json(self) -> dict:
        return {"max_bytes": self.max_bytes, "max_duration_s": self.max_duration_s}


@dataclass
class UploadJob:
    video: str
    state: str = "extracting"  # "receiving" (the body is arriving), "extracting", then "done" or "failed"
    progress: float = 0.0  # fraction of the clips extracted
    error: str | None = None

    def to_json(self) -> dict:
        return {"video": self.video, "state": self.state, "progress": self.progress, "error": self.error}


class Uploads:
    """The upload folder of one server. `on_ready(video, file)` is called (under `model_lock`) once a video's
    features are in `model`, so the server lists and plays it."""

    def __init__(self, model, folder: str | Path, limits: UploadLimits, model_lock: threading.Lock,
                 on_ready: Callable[[str, Path], None]):
        check_extractable(model)
        self.model, self.limits, self.model_lock, self.on_ready = model, limits, model_lock, on_ready
        self.folder = Path(folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.jobs: dict[str, UploadJob] = {}
        self._queue: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="tal-serve-uploads", daemon=True)
        self._worker.start()

    def restore(self) -> list[str]:
        """Make the videos uploaded before this start answerable again; returns their ids."""
        from tal.features.extract import VIDEO_SUFFIXES

        restored = []
        for features in sorted(self.folder.glob("*.h5")):
            video_file = next((p for p in sorted(self.folder.glob(f"{glob_escape(features.stem)}.*"))
                               if p.suffix.lower() in VIDEO_SUFFIXES), None)
            try:
                if video_file is None:
                    raise TalInputError("its video file is gone")
                with self.model_lock:
                    for video in self.model.add_features(features):
                        self.on_ready(video, video_file)
                        restored.append(video)
            except TalInputError as exc:
                print(f"tal serve: skipping the earlier upload {features}: {exc}", file=sys.stderr)
        return restored

    def reserve(self, filename: str, taken) -> tuple[str, str]:
        """(video id, file suffix) for an uploaded file's name: its stem made safe, made unique among `taken`
        and the other uploads; the id is held (state "receiving") until `start` or `drop`."""
        from tal.features.extract import VIDEO_SUFFIXES

        name = Path(filename.replace("\\", "/")).name
        suffix = Path(name).suffix.lower()
        if suffix not in VIDEO_SUFFIXES:
            raise TalInputError(f"{name[:100]!r} is not named like a video file; the suffixes read are "
                                f"{', '.join(sorted(VIDEO_SUFFIXES))}")
        stem = _UNSAFE.sub("_", Path(name).stem).strip("._") or "upload"
        video, n = stem[:80], 2
        while video in taken or video in self.jobs:
            video, n = f"{stem[:80]}-{n}", n + 1
        self.jobs[video] = UploadJob(video, state="receiving")
        return video, suffix

    def drop(self, video: str) -> None:
        """Forget a reserved id whose file was refused."""
        self.jobs.pop(video, None)

    def check(self, path: Path) -> None:
        """Refuse a file that is no readable video or is longer than the limit (TalInputError)."""
        from tal.features.decode import probe_video

        try:
            info = probe_video(path)
        except Exception as exc:  # the decoder's reasons vary: the client gets one clear sentence
            raise TalInputError(f"the uploaded file is not a video tal can read "
                                f"({getattr(exc, 'reason', None) or type(exc).__name__})") from None
        if info.duration > self.limits.max_duration_s:
            raise TalInputError(f"the uploaded video lasts {info.duration:.0f} s; the limit is "
                                f"{self.limits.max_duration_s:g} s")

    def start(self, video: str, path: Path) -> UploadJob:
        """Queue the extraction of a checked file saved at `path` (in the upload folder)."""
        job = self.jobs[video] = UploadJob(video)
        self._queue.put((job, path))
        return job

    def _work(self) -> None:
        while True:
            job, path = self._queue.get()
            try:
                self._extract(job, path)
            except Exception as exc:  # a bad file must never stop the server or the next uploads
                job.state, job.error = "failed", str(exc) if isinstance(exc, TalInputError) else (
                    f"feature extraction failed ({type(exc).__name__}: {exc})")
                path.unlink(missing_ok=True)

    def _extract(self, job: UploadJob, path: Path) -> None:
        from tal.features.extract import VideoJob, extract_features

        settings = self.model.extract_settings()
        total = max(1, expected_clips(path, settings))
        out = self.folder / f"{job.video}.h5"

        def on_clips(done: int) -> None:
            job.progress = min(1.0, done / total)

        result = extract_features([VideoJob(job.video, str(path))], out, settings, progress=False, on_clips=on_clips)
        if result.failures:
            out.unlink(missing_ok=True)
            raise TalInputError(f"feature extraction failed: {result.failures[0]['reason']}")
        with self.model_lock:
            for video in self.model.add_features(out):
                self.on_ready(video, path)
        job.state, job.progress = "done", 1.0


def check_extractable(model) -> None:
    """Refuse (TalInputError) a model whose features no tal backbone can make for a new video."""
    if not model.can_extract():
        raise TalInputError(f"--uploads needs a checkpoint whose features came from a tal backbone; "
                            f"{model.checkpoint} was trained on {model.settings.get('backbone')!r} features")


def expected_clips(path: Path, settings) -> int:
    """How many clips extraction will run for a video (the progress bar's total)."""
    from tal.features.decode import probe_video, resample_indices, window_starts

    info = probe_video(path)
    window = settings.window or 1
    frames = len(resample_indices(info.num_frames, info.fps, settings.fps))
    return len(window_starts(frames, window, settings.stride or window))


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
