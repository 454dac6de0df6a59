"""Drawing and encoding one synthetic video: a background, actions on top, frames streamed to an mp4.

A video is a slowly drifting, nearly grey background (a soft gradient, a fixed smooth texture and mild
per-frame noise) on which the actions of `tal.datasets.synthetic_actions` are drawn. Frames are drawn
a chunk at a time with numpy coordinate grids and streamed to the encoder (H.264 through libx264 when
PyAV's FFmpeg has it, else MPEG-4 part 2). Frames carry pts = i in a 1/fps time base, so decoders
number them 0..N-1 and the video lasts N / fps seconds.

`render_video` writes one video. Pixels and codec settings live here, apart from the action classes,
so that the look of a frame and the bytes of a file (deterministic for a seed) change in one place.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from tal.datasets.synthetic_actions import (
    ACTION_CLASSES, FRAME_TOLERANCE, ActionInstance, Array, Grid, frame_span, plan_instances, seeded_rngs,
)
from tal.errors import TalInputError

DEFAULT_FPS = 10
DEFAULT_SIZE = (160, 120)  # (width, height) pixels
CHUNK_FRAMES = 32  # frames drawn at once: bounds memory whatever the video's length
BACKGROUND_SATURATION = 0.08  # well under the 0.25 the handcrafted backbone calls chromatic
NOISE_SIGMA = 1.5 / 255
NOISE_FRAMES = 16  # noise images drawn once per video; frames pick among them (cheaper than fresh noise)
CODECS = ("auto", "libx264", "mpeg4")


@dataclass(frozen=True)
class _Background:
    """A nearly grey, slowly drifting gradient with a fixed smooth texture and mild per-frame noise."""

    base: float
    amplitude: float
    wave_x: float  # cycles per pixel
    wave_y: float
    drift_hz: float
    texture: Array  # float32 [H, W], zero mean
    tint: Array  # float32 [3], luma 1
    noise: Array  # float32 [NOISE_FRAMES, H, W, 3]: each frame adds one, drawn at random

    @staticmethod
    def draw(rng: np.random.Generator, width: int, height: int) -> "_Background":
        angle = rng.uniform(0, 2 * np.pi)
        period_px = rng.uniform(1.2, 2.5) * max(width, height)
        coarse = rng.normal(0, 1, (height // 20 + 2, width // 20 + 2)).astype(np.float32)
        texture = _bilinear(coarse, np.arange(height) / 20, np.arange(width) / 20)
        texture = 0.03 * (texture - texture.mean()) / (texture.std() + 1e-6)
        tint = np.asarray(colorsys.hsv_to_rgb(rng.random(), BACKGROUND_SATURATION, 1.0), np.float32)
        tint /= float(tint @ np.asarray([0.299, 0.587, 0.114], np.float32))
        return _Background(
            base=float(rng.uniform(0.45, 0.55)), amplitude=float(rng.uniform(0.06, 0.1)),
            wave_x=float(np.cos(angle) / period_px), wave_y=float(np.sin(angle) / period_px),
            drift_hz=float(rng.uniform(0.02, 0.06) * rng.choice([-1, 1])),
            texture=texture.astype(np.float32), tint=tint,
            noise=NOISE_SIGMA * rng.standard_normal((NOISE_FRAMES, height, width, 3), dtype=np.float32),
        )

    def render(self, t_s: Array, g: Grid, rng: np.random.Generator) -> Array:
        """float32 [n, H, W, 3] for frame times t_s [n, 1, 1]."""
        phase = g.x * self.wave_x + g.y * self.wave_y - self.drift_hz * t_s  # [n, H, W]
        grey = self.base + self.amplitude * np.cos(2 * np.pi * phase) + self.texture  # [n, H, W]
        rgb = grey[..., None] * self.tint  # [n, H, W, 3]
        return rgb + self.noise[rng.integers(NOISE_FRAMES, size=t_s.shape[0])]


def _bilinear(coarse: Array, rows: Array, cols: Array) -> Array:
    """Sample a 2-D array at fractional (rows [H], cols [W]) -> [H, W]."""
    r0 = np.floor(rows).astype(int)
    c0 = np.floor(cols).astype(int)
    fr = (rows - r0)[:, None]
    fc = (cols - c0)[None, :]
    top = coarse[r0][:, c0] * (1 - fc) + coarse[r0][:, c0 + 1] * fc
    bottom = coarse[r0 + 1][:, c0] * (1 - fc) + coarse[r0 + 1][:, c0 + 1] * fc
    return top * (1 - fr) + bottom * fr


def render_frames(instances: Sequence[ActionInstance], num_frames: int, fps: float, size: tuple[int, int],
                  seed: int) -> Iterator[Array]:
    """uint8 [n <= CHUNK_FRAMES, H, W, 3] RGB blocks of the video, in order (instances later drawn on top)."""
    width, height = size
    grid = Grid(width, height, np.arange(width, dtype=np.float32)[None, None, :],
                 np.arange(height, dtype=np.float32)[None, :, None])
    background_rng = seeded_rngs(seed, 2)[1]
    background = _Background.draw(background_rng, width, height)
    spans = np.asarray([frame_span(i.start_s, i.end_s, fps) for i in instances], np.int64).reshape(-1, 2)  # [A, 2]
    for first in range(0, num_frames, CHUNK_FRAMES):
        frames = np.arange(first, min(first + CHUNK_FRAMES, num_frames))  # [n]
        t_s = (frames / fps).astype(np.float32)[:, None, None]  # [n, 1, 1]
        canvas = background.render(t_s, grid, background_rng)  # [n, H, W, 3]
        active = (frames[None, :] >= spans[:, :1]) & (frames[None, :] < spans[:, 1:])  # [A, n]
        for inst, span, on in zip(instances, spans, active):
            if not on.any():
                continue
            local_s = ((frames[on] - span[0]) / fps).astype(np.float32)[:, None, None]  # [m, 1, 1]
            coverage, colour = ACTION_CLASSES[inst.label].draw(inst, local_s, grid)
            alpha = coverage[..., None]  # [m, H, W, 1]
            canvas[on] = canvas[on] * (1 - alpha) + alpha * colour
        yield np.clip(canvas * 255 + 0.5, 0, 255).astype(np.uint8)


def pick_codec(codec: str = "auto") -> str:
    """'libx264' (H.264) if PyAV's FFmpeg has it, else 'mpeg4'; an explicit name is checked."""
    import av

    if codec not in CODECS:
        raise TalInputError(f"unknown codec {codec!r}: choose one of {', '.join(CODECS)}")
    if codec == "auto":
        return "libx264" if "libx264" in av.codecs_available else "mpeg4"
    if codec not in av.codecs_available:
        raise TalInputError(f"codec {codec!r} is not in this PyAV's FFmpeg build: use --codec auto")
    return codec


def _open_stream(container, codec: str, fps: int, width: int, height: int):
    stream = container.add_stream(codec, rate=Fraction(fps))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.codec_context.thread_count = 1  # deterministic output, and polite on a shared machine
    stream.codec_context.gop_size = 2 * fps
    if codec == "libx264":
        stream.options = {"crf": "18", "preset": "veryfast", "bf": "0"}
    else:
        stream.codec_context.bit_rate = 2_000_000
        stream.options = {"qscale": "2", "bf": "0"}
    return stream


def check_frames(size: tuple[int, int], fps: float) -> int:
    """fps as an int, after checking that the encoder takes this frame size and rate."""
    width, height = size
    if width < 32 or height < 32 or width % 2 or height % 2:
        raise TalInputError(f"frame size {width}x{height}: width and height must be even and >= 32 (H.264 4:2:0)")
    if int(fps) != fps or fps < 1:
        raise TalInputError(f"fps {fps}: must be a positive whole number")
    return int(fps)


@dataclass(frozen=True)
class RenderedVideo:
    """What `render_video` wrote."""

    path: Path
    num_frames: int
    fps: int
    duration_s: float  # num_frames / fps: the duration decoders report
    codec: str
    instances: list[ActionInstance]


def render_video(
    path: str | Path,
    actions: Sequence[tuple[str, float, float] | ActionInstance],
    duration_s: float,
    fps: int = DEFAULT_FPS,
    size: tuple[int, int] = DEFAULT_SIZE,
    seed: int = 0,
    codec: str = "auto",
) -> RenderedVideo:
    """Write an mp4 of round(duration_s * fps) frames showing `actions` (label, start_s, end_s).

    Tuples get their look from `seed` (see `plan_instances`); ActionInstances are drawn as given. The
    background comes from `seed` too. The file appears complete or not at all (temp file + rename).
    """
    import av

    width, height = size
    fps = check_frames(size, fps)
    num_frames = int(round(duration_s * fps))
    if num_frames < 1:
        raise TalInputError(f"duration {duration_s} s is shorter than one frame at {fps} fps")
    tuples = [(a.label, a.start_s, a.end_s) if isinstance(a, ActionInstance) else tuple(a) for a in actions]
    planned = plan_instances(tuples, seed)
    instances = [a if isinstance(a, ActionInstance) else p for a, p in zip(actions, planned)]
    video_s = num_frames / fps
    for inst in instances:
        if not (0 <= inst.start_s < inst.end_s <= video_s + FRAME_TOLERANCE / fps):
            raise TalInputError(f"{path}: action {inst.label} [{inst.start_s}, {inst.end_s}] must satisfy "
                                f"0 <= start < end <= the video's {video_s} s")
    codec = pick_codec(codec)
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    try:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = _open_stream(container, codec, fps, width, height)
            index = 0
            for block in render_frames(instances, num_frames, fps, size, seed):
                for rgb in block:
                    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                    frame.pts = index
                    index += 1
                    container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return RenderedVideo(path, num_frames, fps, video_s, codec, instances)
