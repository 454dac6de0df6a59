"""Video decoding with exact frame access: decord and PyAV behind one interface.

Frame `i` of a video is the i-th frame in presentation order. Both decoders build the same index
when a video is opened: they demux (read without decoding) every packet of the first video stream,
sort the packets' presentation timestamps (pts) and number them 0..N-1. So `num_frames` is the
number of video packets actually present in the file, not the container's header count (which can
be missing or wrong); a file whose header promises more frames than it holds is reported as
truncated. (PyAV also leaves out packets an mp4 edit list marks as discarded, which FFmpeg never
outputs as frames; decord counts them. The two agree on files without such edit lists, which
includes every sample video.) decord builds this index itself (`len(VideoReader)`); the PyAV reader builds it in
`_PyAVReader._index`, and identifies every decoded frame by looking its pts up in that table, so
streams whose first pts is not 0 and streams with B-frames are handled.

Which decoder: "auto" is decord when it is installed, except for containers where decord was
measured to return wrong frames (MPEG-TS, AVI with B-frames: see `decord_reliable`), which go to
PyAV. Both give byte-identical RGB frames on the sample videos (same FFmpeg conversion).

Exact access with PyAV: to reach frame i the reader seeks to the keyframe at or before frame i and
decodes forward, dropping frames until frame i appears; a request that is further along in the same
group of pictures just keeps decoding. decord does the same internally.

`iter_clips` streams windows through a video with memory flat in its length: it decodes forward
once (in chunks of frames) and keeps only the frames of windows still open.
"""
from __future__ import annotations

import importlib.util
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from tal.errors import TalInputError

DECODERS = ("auto", "decord", "pyav")
DECORD_RELIABLE_FORMATS = {"mov", "mp4", "matroska", "webm"}  # FFmpeg demuxer names


class VideoDecodeError(TalInputError):
    """A video that cannot be decoded: missing, corrupt/truncated, no video stream, zero frames."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: cannot decode video: {reason}")


@dataclass(frozen=True)
class VideoInfo:
    """What a decoder knows about a video before reading its frames.

    `num_frames` is the number of video packets present in the file (see the module docstring);
    `fps` is the stream's average frame rate.
    """

    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    variable_rate: bool = False  # frame intervals differ: frames are then sampled by presentation time

    @property
    def duration(self) -> float:
        """num_frames / fps, in seconds."""
        return self.num_frames / self.fps


class VideoReader(ABC):
    """Exact frame access to one video; a context manager, close() frees the decoder."""

    info: VideoInfo
    decoder: str

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """uint8 [N, H, W, 3] RGB frames at native `indices`, in the order asked (repeats allowed)."""
        indices_arr = self._check_indices(indices)
        if indices_arr.size == 0:
            return np.zeros((0, self.info.height, self.info.width, 3), np.uint8)
        unique, inverse = np.unique(indices_arr, return_inverse=True)
        frames = np.concatenate(list(self._iter_unique(unique, chunk=64)))  # [U, H, W, 3]
        return frames[inverse]

    def iter_frames(self, indices: Sequence[int], chunk: int = 64) -> Iterator[np.ndarray]:
        """Stream uint8 [n <= chunk, H, W, 3] blocks of the frames at non-decreasing native `indices`.

        Memory is bounded by `chunk` frames; every frame is decoded at most once.
        """
        indices_arr = self._check_indices(indices)
        if np.any(np.diff(indices_arr) < 0):
            raise ValueError("iter_frames needs non-decreasing frame indices; use get_frames for any order")
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        unique, counts = np.unique(indices_arr, return_counts=True)
        if np.all(counts == 1):
            yield from self._iter_unique(unique, chunk)
            return
        counts_per_block = np.split(counts, np.arange(chunk, unique.size, chunk))
        for block, block_counts in zip(self._iter_unique(unique, chunk), counts_per_block):
            repeated = np.repeat(block, block_counts, axis=0)  # [sum(counts), H, W, 3]
            for start in range(0, len(repeated), chunk):
                yield repeated[start:start + chunk]

    @abstractmethod
    def close(self) -> None:
        """Free the decoder and the file."""

    def frame_times(self) -> np.ndarray | None:
        """Presentation time (s, from the first frame) of every frame, float64 [N]; None if unknown."""
        return getattr(self, "_times", None)

    @abstractmethod
    def _iter_unique(self, indices: np.ndarray, chunk: int) -> Iterator[np.ndarray]:
        """Blocks of at most `chunk` frames at strictly increasing, in-range `indices`."""

    def _check_indices(self, indices: Sequence[int]) -> np.ndarray:
        indices_arr = np.asarray(indices, dtype=np.int64).reshape(-1)
        bad = (indices_arr < 0) | (indices_arr >= self.info.num_frames)
        if np.any(bad):
            raise IndexError(
                f"{self.info.path}: frame index {int(indices_arr[bad][0])} out of range [0, {self.info.num_frames})"
            )
        return indices_arr

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_path(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise VideoDecodeError(p, "no such file")
    if not p.is_file():
        raise VideoDecodeError(p, "not a regular file")
    if p.stat().st_size == 0:
        raise VideoDecodeError(p, "empty file (0 bytes)")
    return p


def _valid_fps(fps: float | None) -> bool:
    return fps is not None and np.isfinite(float(fps)) and float(fps) > 0


class _PyAVReader(VideoReader):
    """PyAV reader: packet-pts index, seek to the keyframe before a frame, decode forward."""

    decoder = "pyav"

    def __init__(self, path: Path):
        import av

        self._av = av
        self._path = path
        # RGB conversion through a reformatter of this reader's own. PyAV >= 18.1.1 otherwise shares one per
        # thread (a threading.local), and a process forked after using it (extraction's DataLoader workers)
        # inherits its swscale context without the context's slice threads: the first conversion there frees
        # those threads and waits forever for them to end.
        self._reformatter = av.video.reformatter.VideoReformatter()
        try:
            self._container = av.open(str(path))
        except av.FFmpegError as exc:
            raise VideoDecodeError(
                path, f"not a readable video container: corrupt, truncated or not a video ({_ffmpeg_reason(exc)})"
            ) from None
        try:
            self._open_stream()
        except BaseException:
            self._container.close()
            raise

    def _open_stream(self) -> None:
        path = self._path
        if not self._container.streams.video:
            kinds = sorted({s.type for s in self._container.streams}) or ["none"]
            raise VideoDecodeError(path, f"no video stream (streams: {', '.join(kinds)})")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        pts_sorted, key_positions = self._index()
        self._pts = pts_sorted  # int64 [N] presentation timestamps in time_base units, or None
        self._key_positions = key_positions  # int64 [K] frame indices of keyframes, sorted
        num_frames = len(pts_sorted) if pts_sorted is not None else self._num_packets
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        fps = float(rate) if rate and _valid_fps(float(rate)) else None
        if fps is None and pts_sorted is not None and num_frames > 1:
            span_s = float((pts_sorted[-1] - pts_sorted[0]) * self._stream.time_base)
            fps = (num_frames - 1) / span_s if span_s > 0 else None
        if fps is None:
            raise VideoDecodeError(path, "the video stream has no frame rate")
        ctx = self._stream.codec_context
        self._times = None if pts_sorted is None else \
            (pts_sorted - pts_sorted[0]).astype(np.float64) * float(self._stream.time_base)  # [N] seconds
        self.info = VideoInfo(str(path), num_frames, fps, int(ctx.width), int(ctx.height),
                              is_variable_rate(self._times))
        self._decoded = None  # live decode iterator
        self._last = -1  # index of the frame the iterator produced last

    def _index(self) -> tuple[np.ndarray | None, np.ndarray]:
        """Demux every packet of the stream: sorted pts table and keyframe positions."""
        pts, keys = [], []
        present = 0
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0:  # the demuxer's final flush packet
                    continue
                present += 1
                if packet.is_discard:  # cut by an edit list: never output as a frame
                    continue
                pts.append(packet.pts)
                keys.append(packet.is_keyframe)
        except self._av.FFmpegError as exc:
            raise VideoDecodeError(self._path, f"corrupt or truncated ({_ffmpeg_reason(exc)})") from None
        self._num_packets = len(pts)
        if not pts:
            raise VideoDecodeError(self._path, "the video stream has zero frames")
        promised = self._stream.frames
        if promised > present:
            raise VideoDecodeError(
                self._path, f"truncated: the container lists {promised} frames but only {present} are present"
            )
        self._seek_start()
        if any(p is None for p in pts):
            return None, np.zeros(1, np.int64)  # untimed stream: frames are counted from the start
        pts_arr = np.asarray(pts, dtype=np.int64)  # [N] in demux (decode) order
        order = np.argsort(pts_arr, kind="stable")
        pts_sorted = pts_arr[order]
        if np.any(np.diff(pts_sorted) == 0):
            return None, np.zeros(1, np.int64)
        key_positions = np.flatnonzero(np.asarray(keys, dtype=bool)[order])
        if key_positions.size == 0 or key_positions[0] != 0:
            key_positions = np.concatenate([[0], key_positions])
        return pts_sorted, key_positions

    def _seek_start(self) -> None:
        """Back to the first packet; streams that cannot seek are reopened."""
        try:
            self._container.seek(0, backward=True, any_frame=False, stream=self._stream)
        except self._av.FFmpegError:
            self._container.close()
            self._container = self._av.open(str(self._path))
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "AUTO"

    def _seek_plan(self, index: int) -> list[int]:
        """Keyframes to seek to for frame `index`: the nearest at or before it, then earlier ones, then 0.

        Some demuxers (MPEG-TS) land after the asked timestamp; backing off a few keyframes costs
        less than decoding from the start of a long video.
        """
        if self._pts is None:
            return [0]
        nearest = int(np.searchsorted(self._key_positions, index, side="right")) - 1
        plan = [int(self._key_positions[max(nearest - back, 0)]) for back in (0, 1, 3, 7)] + [0]
        return list(dict.fromkeys(plan))

    def _restart(self, key_position: int) -> None:
        """Seek to keyframe `key_position` (0: the start) and start a new decode iterator."""
        if key_position == 0:
            self._seek_start()
        else:
            pts = int(self._pts[key_position])
            self._container.seek(pts, backward=True, any_frame=False, stream=self._stream)
        self._decoded = self._container.decode(self._stream)
        self._last = -1

    def _frame_index(self, frame: object) -> int:
        """Presentation index of a decoded frame, from its pts (or by counting in untimed streams)."""
        if self._pts is None:
            return self._last + 1
        pts = frame.pts  # type: ignore[attr-defined]
        pos = int(np.searchsorted(self._pts, pts)) if pts is not None else len(self._pts)
        if pos >= len(self._pts) or self._pts[pos] != pts:
            raise VideoDecodeError(self._path, f"decoded a frame with pts {pts} that is not in the stream's index")
        return pos

    def _needs_seek(self, index: int) -> bool:
        if self._decoded is None or index <= self._last:
            return True
        if self._pts is None:
            return False
        key = self._key_positions[np.searchsorted(self._key_positions, index, side="right") - 1]
        return key > self._last + 1

    def _decode_to(self, index: int) -> np.ndarray:
        """RGB frame `index`, decoding forward from the current position or from a keyframe.

        If a seek lands past the frame, or the stream ends before it, earlier keyframes are tried,
        and last the start of the stream.
        """
        plan: list[int | None] = self._seek_plan(index)
        if not self._needs_seek(index):
            plan.insert(0, None)  # first just keep decoding
        for key_position in plan:
            if key_position is not None:
                self._restart(key_position)
            try:
                for frame in self._decoded:
                    self._last = self._frame_index(frame)
                    if self._last == index:
                        return self._reformatter.reformat(frame, format="rgb24").to_ndarray()
                    if self._last > index:
                        break
            except self._av.FFmpegError as exc:
                self._decoded = None
                raise VideoDecodeError(
                    self._path, f"corrupt data near frame {index} of {self.info.num_frames} ({_ffmpeg_reason(exc)})"
                ) from None
            self._decoded = None
        raise VideoDecodeError(
            self._path,
            f"frame {index} of {self.info.num_frames} could not be decoded "
            f"(decoding from the start, the last frame reached was {self._last})",
        )

    def _iter_unique(self, indices: np.ndarray, chunk: int) -> Iterator[np.ndarray]:
        block: list[np.ndarray] = []
        for index in indices.tolist():
            block.append(self._decode_to(index))
            if len(block) == chunk:
                yield np.stack(block)
                block = []
        if block:
            yield np.stack(block)

    def close(self) -> None:
        self._decoded = None
        self._container.close()


class _DecordReader(VideoReader):
    """decord reader: its own packet index and accurate seek; frames fetched with get_batch."""

    decoder = "decord"

    def __init__(self, path: Path):
        import decord

        self._path = path
        try:
            self._vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
            num_frames = len(self._vr)
            first = self._to_numpy(self._vr.get_batch([0]))
            fps = float(self._vr.get_avg_fps())
        except (decord.DECORDError, RuntimeError) as exc:
            raise _explain_decord_failure(path, exc) from None
        if num_frames == 0:
            raise VideoDecodeError(path, "the video stream has zero frames")
        if not _valid_fps(fps):
            stamps = self._vr.get_frame_timestamp([0, num_frames - 1])  # [2, 2] start/stop seconds
            span_s = float(stamps[1, 0] - stamps[0, 0])
            if num_frames < 2 or span_s <= 0:
                raise VideoDecodeError(path, "the video stream has no frame rate")
            fps = (num_frames - 1) / span_s
        try:
            stamps = np.asarray(self._vr.get_frame_timestamp(list(range(num_frames))), dtype=np.float64)  # [N, 2]
            self._times = stamps[:, 0] - stamps[0, 0]
        except (decord.DECORDError, RuntimeError, IndexError):
            self._times = None
        self.info = VideoInfo(str(path), num_frames, fps, int(first.shape[2]), int(first.shape[1]),
                              is_variable_rate(self._times))

    @staticmethod
    def _to_numpy(batch: object) -> np.ndarray:
        """decord NDArray -> numpy without a copy (through DLPack; `asnumpy` copies slowly)."""
        import torch
        from torch.utils.dlpack import from_dlpack

        if isinstance(batch, torch.Tensor):  # decord's torch bridge is on
            return batch.numpy()
        if hasattr(batch, "to_dlpack"):
            return from_dlpack(batch.to_dlpack()).numpy()
        return np.asarray(batch)

    def _iter_unique(self, indices: np.ndarray, chunk: int) -> Iterator[np.ndarray]:
        import decord

        for start in range(0, indices.size, chunk):
            block = indices[start:start + chunk]
            try:
                yield self._to_numpy(self._vr.get_batch(block.tolist()))
            except (decord.DECORDError, RuntimeError) as exc:
                raise VideoDecodeError(
                    self._path,
                    f"frames {int(block[0])}..{int(block[-1])} of {self.info.num_frames} could not be decoded "
                    f"({_decord_reason(exc)})",
                ) from None

    def close(self) -> None:
        self._vr = None


def _ffmpeg_reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _decord_reason(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text.split(": ", 1)[-1] if text.startswith("[") else text


def _explain_decord_failure(path: Path, exc: Exception) -> VideoDecodeError:
    """decord's errors are C++ log lines; PyAV usually says what is wrong in plain words."""
    try:
        _PyAVReader(path).close()
    except VideoDecodeError as clear:
        return clear
    return VideoDecodeError(path, f"decord failed: {_decord_reason(exc)}")


def decord_available() -> bool:
    """True if decord can be imported (it is an optional extra)."""
    return importlib.util.find_spec("decord") is not None


def container_format(path: str | Path) -> set[str]:
    """FFmpeg's names for the container of `path` (e.g. {"mov", "mp4", ...}); empty if unreadable."""
    import av

    try:
        with av.open(str(path)) as container:
            return set(container.format.name.split(","))
    except (av.FFmpegError, OSError):
        return set()


def decord_reliable(path: str | Path) -> bool:
    """True if decord's frame index can be trusted for the container of `path`.

    Measured: decord returns the frames of the asked indices for MP4/MOV and Matroska/WebM, but
    wrong frames for MPEG-TS and for AVI with B-frames; PyAV is exact on all of them.
    """
    names = container_format(path)
    return not names or bool(names & DECORD_RELIABLE_FORMATS)


def resolve_decoder(decoder: str, path: str | Path | None = None) -> str:
    """'decord' or 'pyav' for a --decoder value.

    "auto" = decord if importable, else PyAV; given a `path` whose container decord mishandles
    (see `decord_reliable`), "auto" picks PyAV for it.
    """
    if decoder not in DECODERS:
        raise TalInputError(f"unknown decoder {decoder!r}: choose one of {', '.join(DECODERS)}")
    if decoder == "auto":
        if not decord_available():
            return "pyav"
        return "decord" if path is None or decord_reliable(path) else "pyav"
    if decoder == "decord" and not decord_available():
        raise TalInputError(
            "--decoder decord: decord is not installed (pip install 'tal[decord]'), or use --decoder pyav"
        )
    return decoder


def open_video(path: str | Path, decoder: str = "auto") -> VideoReader:
    """A VideoReader for `path`; "auto" = decord if importable (and reliable for the container), else PyAV."""
    checked = _check_path(path)
    name = resolve_decoder(decoder)
    if name == "decord" and not decord_reliable(checked):
        if decoder == "auto":
            name = "pyav"
        else:
            warnings.warn(
                f"{checked}: decord may return wrong frames for {'/'.join(sorted(container_format(checked)))} "
                "containers; use --decoder pyav (or auto)",
                stacklevel=2,
            )
    return _DecordReader(checked) if name == "decord" else _PyAVReader(checked)


def probe_video(path: str | Path, decoder: str = "auto") -> VideoInfo:
    """VideoInfo of `path` (builds the packet index, decodes at most one frame)."""
    with open_video(path, decoder) as reader:
        return reader.info


def resample_indices(num_frames: int, src_fps: float, target_fps: float | None) -> np.ndarray:
    """Native frame index (int64 [M]) for every frame of the timeline resampled to `target_fps`.

    Resampled frame j sits at time j / target_fps and takes the native frame showing at that time,
    floor(j * src_fps / target_fps); M = ceil(num_frames * target_fps / src_fps) keeps every
    resampled time inside the video. A tolerance of 1e-6 frames absorbs float error in rates such as
    30000/1001.
    """
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if target_fps is None:
        return np.arange(num_frames, dtype=np.int64)
    if not (_valid_fps(src_fps) and _valid_fps(target_fps)):
        raise ValueError(f"frame rates must be positive, got src_fps={src_fps}, target_fps={target_fps}")
    ratio = src_fps / target_fps  # native frames per resampled frame
    num_resampled = int(np.ceil(num_frames / ratio - 1e-6))
    native = np.floor(np.arange(num_resampled) * ratio + 1e-6).astype(np.int64)  # [M]
    return np.minimum(native, num_frames - 1)


def is_variable_rate(times: np.ndarray | None, tolerance: float = 0.5) -> bool:
    """Whether frame intervals differ by more than `tolerance` of their median (timestamp rounding of a
    constant rate, e.g. 30000/1001 in a 1/90000 time base, stays far below it)."""
    if times is None or len(times) < 3:
        return False
    gaps = np.diff(times)  # [N - 1]
    median = float(np.median(gaps))
    return median > 0 and float(np.abs(gaps - median).max()) > tolerance * median


def resample_by_time(times: np.ndarray, target_fps: float) -> np.ndarray:
    """Native frame index (int64 [M]) for a timeline at `target_fps` over frames shown at `times` (s).

    Resampled frame j sits at j / target_fps and takes the last frame presented at or before it, so
    a variable-frame-rate video is sampled where its frames really are. M counts the times inside the
    video, whose last frame lasts one median interval; for a constant rate this is `resample_indices`.
    """
    if not _valid_fps(target_fps):
        raise ValueError(f"target_fps must be positive, got {target_fps}")
    gaps = np.diff(times)
    end_s = float(times[-1]) + (float(np.median(gaps)) if len(gaps) else 1.0 / target_fps)
    num_resampled = int(np.ceil(end_s * target_fps - 1e-6))
    at = np.arange(num_resampled) / target_fps + 1e-9  # [M]
    return np.clip(np.searchsorted(times, at, side="right") - 1, 0, len(times) - 1).astype(np.int64)


def timeline(reader: "VideoReader", target_fps: float | None) -> np.ndarray:
    """Native frame index of every frame of the (resampled) timeline features are computed on: by
    presentation time for a variable-frame-rate video (at `target_fps`, or its average rate), by frame
    count otherwise."""
    info = reader.info
    times = reader.frame_times()
    if info.variable_rate and times is not None:
        return resample_by_time(times, target_fps or info.fps)
    return resample_indices(info.num_frames, info.fps, target_fps)


def window_starts(num_frames: int, window: int, stride: int) -> np.ndarray:
    """Start frame (int64 [K]) of every full window: 0, stride, ... while start + window <= num_frames."""
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    return np.arange(0, max(num_frames - window + 1, 0), stride, dtype=np.int64)


def iter_clips(
    path: str | Path,
    window: int,
    stride: int,
    target_fps: float | None = None,
    decoder: str = "auto",
    size: int | None = None,
    chunk: int = 32,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (feature index i, uint8 [window, H, W, 3]) for every full window, streaming.

    Window i holds resampled frames [i*stride, i*stride + window) (see `timeline`). The
    video is decoded forward once, `chunk` frames at a time; a frame is kept only while a window
    that contains it is still open, so memory is about (window + chunk) frames whatever the video's
    length. `size` resizes each frame's short side to `size` pixels as it is decoded. A video
    shorter than one window yields nothing.
    """
    from tal.features.transforms import resize_short_side

    with open_video(path, decoder) as reader:
        native = timeline(reader, target_fps)  # [M]
        starts = window_starts(len(native), window, stride)  # [K]
        if starts.size == 0:
            return
        offsets = np.arange(window)
        needed = np.unique((starts[:, None] + offsets[None, :]).reshape(-1))  # resampled positions used
        wanted = np.unique(native[needed])  # native frames to decode, increasing
        held: dict[int, np.ndarray] = {}  # native index -> frame, only while some open window needs it
        next_window = 0
        position = 0  # into `wanted`
        for block in reader.iter_frames(wanted, chunk=chunk):
            if size is not None:
                block = resize_short_side(block, size)
            for frame in block:
                held[int(wanted[position])] = frame
                position += 1
            last_native = int(wanted[position - 1])
            while next_window < starts.size:
                start = int(starts[next_window])
                clip_native = native[start:start + window]  # [window]
                if clip_native[-1] > last_native:
                    break
                yield next_window, np.stack([held[n] for n in clip_native.tolist()])
                next_window += 1
                keep_from = int(native[starts[next_window]]) if next_window < starts.size else last_native + 1
                for n in [n for n in held if n < keep_from]:
                    del held[n]
