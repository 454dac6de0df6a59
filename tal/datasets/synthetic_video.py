"""Synthetic videos with known actions: real encoded mp4 files for a demo that needs no data and no weights.

A video is a slowly drifting, nearly grey background (a soft gradient, a fixed smooth texture and mild
per-frame noise) on which coloured objects perform actions of seven classes. Each class has its own
colour family (hue) and its own motion, so the weight-free `handcrafted` backbone (colour histograms,
frame differences, translation, texture orientation) tells them apart:

  bounce       red ball moving up and down         vertical motion, |sin| trajectory
  slide_right  pink square crossing to the right   horizontal translation, wraps around the frame
  slide_left   blue square crossing to the left    horizontal translation, wraps around the frame
  spin         green bar rotating about its centre rotation: large frame difference, no net translation
  blink        yellow disc flashing bright / dim   brightness change in place
  grow         purple disc expanding, then again   radial motion
  wave         cyan band of moving stripes         fine oriented texture, horizontal motion

Time is exact: an action [start_s, end_s] is drawn on exactly the frames whose timestamp i / fps lies
in [start_s, end_s) (to within 1e-6 of a frame, which absorbs float error in start_s * fps). Frames
carry pts = i in a 1/fps time base, so decoders number them 0..N-1 and the video lasts N / fps seconds.

`render_video` writes one video; `make_video_set` writes a whole set with ActivityNet JSON (detection)
and grounding JSONL (by default one or two sentences per action instance) and is deterministic by seed. Frames
are drawn a chunk at a time with numpy coordinate grids and streamed to the encoder (H.264 through
libx264 when PyAV's FFmpeg has it, else MPEG-4 part 2).
"""
from __future__ import annotations

import argparse
import colorsys
import math
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from tal.errors import TalInputError

DEFAULT_FPS = 10
DEFAULT_SIZE = (160, 120)  # (width, height) pixels
FRAME_TOLERANCE = 1e-6  # frames
CHUNK_FRAMES = 32  # frames drawn at once: bounds memory whatever the video's length
OBJECT_SATURATION = 0.85
OBJECT_VALUE = 0.92
BACKGROUND_SATURATION = 0.08  # well under the 0.25 the handcrafted backbone calls chromatic
NOISE_SIGMA = 1.5 / 255
NOISE_FRAMES = 16  # noise images drawn once per video; frames pick among them (cheaper than fresh noise)
HUE_JITTER_DEG = 6.0
CODECS = ("auto", "libx264", "mpeg4")

Array = np.ndarray


# ----------------------------------------------------------------------------------------------
# Action classes and instances


@dataclass(frozen=True)
class ActionInstance:
    """One action in one video, with every parameter its drawing and its sentences need.

    `scale` and `tempo` are in [0, 1] within the class's size and speed ranges; `x`, `y`, `phase` are
    in [0, 1); `direction` is +1 or -1 where a class has a free direction (spin, wave).
    """

    label: str
    start_s: float
    end_s: float
    hue_deg: float
    color: str
    scale: float
    tempo: float
    x: float
    y: float
    phase: float
    direction: int

    @property
    def rgb(self) -> Array:
        """float32 [3] object colour in [0, 1]."""
        return np.asarray(colorsys.hsv_to_rgb((self.hue_deg % 360) / 360, OBJECT_SATURATION, OBJECT_VALUE),
                          np.float32)


@dataclass(frozen=True)
class _Grid:
    """Pixel coordinates for broadcasting against per-frame times t_s [n, 1, 1]."""

    width: int
    height: int
    x: Array  # float32 [1, 1, W] pixel centres
    y: Array  # float32 [1, H, 1]

    @property
    def unit(self) -> float:
        return float(min(self.width, self.height))


Drawing = tuple[Array, Array]  # coverage float32 [n, H, W] in [0, 1]; colour broadcastable to [n, H, W, 3]


def _edge(signed_distance: Array) -> Array:
    """Antialiased coverage: 1 inside, 0 outside, linear over the pixel that straddles the edge."""
    return np.clip(0.5 - signed_distance, 0.0, 1.0)


def _fraction(values: Array) -> Array:
    return values - np.floor(values)


def _draw_bounce(inst: ActionInstance, t_s: Array, g: _Grid) -> Drawing:
    radius = g.unit * (0.07 + 0.05 * inst.scale)
    period_s = 1.2 - 0.6 * inst.tempo
    floor_y = g.height - radius - 2
    amplitude = (0.6 + 0.4 * inst.y) * (g.height - 2 * radius - 4)
    cx = radius + 2 + inst.x * (g.width - 2 * radius - 4)
    cy = floor_y - amplitude * np.abs(np.sin(np.pi * (t_s / period_s + inst.phase)))  # [n, 1, 1]
    dist = np.sqrt((g.x - cx) ** 2 + (g.y - cy) ** 2)  # [n, H, W]
    return _edge(dist - radius), inst.rgb


def _draw_slide(inst: ActionInstance, t_s: Array, g: _Grid, direction: int) -> Drawing:
    half = g.unit * (0.08 + 0.05 * inst.scale)
    speed_px_s = (0.15 + 0.2 * inst.tempo) * g.width
    cx = inst.x * g.width + direction * speed_px_s * t_s  # [n, 1, 1]
    cy = half + 2 + inst.y * (g.height - 2 * half - 4)
    dx = np.mod(g.x - cx + g.width / 2, g.width) - g.width / 2  # [n, 1, W] wraps around the frame
    return _edge(np.abs(dx) - half) * _edge(np.abs(g.y - cy) - half), inst.rgb


def _draw_spin(inst: ActionInstance, t_s: Array, g: _Grid) -> Drawing:
    half_length = g.unit * (0.18 + 0.1 * inst.scale)
    half_width = g.unit * 0.04
    omega_rad_s = inst.direction * (1.5 + 3.0 * inst.tempo)
    cx = half_length + 2 + inst.x * (g.width - 2 * half_length - 4)
    cy = half_length + 2 + inst.y * (g.height - 2 * half_length - 4)
    angle = 2 * np.pi * inst.phase + omega_rad_s * t_s  # [n, 1, 1]
    cos, sin = np.cos(angle), np.sin(angle)
    dx, dy = g.x - cx, g.y - cy
    along = dx * cos + dy * sin  # [n, H, W]
    across = dy * cos - dx * sin
    return _edge(np.abs(along) - half_length) * _edge(np.abs(across) - half_width), inst.rgb


def _draw_blink(inst: ActionInstance, t_s: Array, g: _Grid) -> Drawing:
    radius = g.unit * (0.1 + 0.06 * inst.scale)
    frequency_hz = 1.2 + 1.8 * inst.tempo
    cx = radius + 2 + inst.x * (g.width - 2 * radius - 4)
    cy = radius + 2 + inst.y * (g.height - 2 * radius - 4)
    bright = _fraction(t_s * frequency_hz + inst.phase) < 0.5  # [n, 1, 1]
    level = np.where(bright, 1.0, 0.35).astype(np.float32)[..., None]  # [n, 1, 1, 1] dim stays chromatic
    dist = np.sqrt((g.x - cx) ** 2 + (g.y - cy) ** 2)  # [1, H, W]
    coverage = np.broadcast_to(_edge(dist - radius), (t_s.shape[0], g.height, g.width))
    return coverage, level * inst.rgb


def _draw_grow(inst: ActionInstance, t_s: Array, g: _Grid) -> Drawing:
    min_radius = g.unit * 0.06
    max_radius = g.unit * (0.2 + 0.1 * inst.scale)
    period_s = 2.4 - 1.4 * inst.tempo
    cx = max_radius + 2 + inst.x * (g.width - 2 * max_radius - 4)
    cy = max_radius + 2 + inst.y * (g.height - 2 * max_radius - 4)
    radius = min_radius + (max_radius - min_radius) * _fraction(t_s / period_s + inst.phase)  # [n, 1, 1]
    dist = np.sqrt((g.x - cx) ** 2 + (g.y - cy) ** 2)  # [1, H, W]
    return _edge(dist - radius), inst.rgb


def _draw_wave(inst: ActionInstance, t_s: Array, g: _Grid) -> Drawing:
    half_height = g.unit * (0.12 + 0.08 * inst.scale)
    wavelength_px = (0.08 + 0.06 * inst.scale) * g.width
    speed_px_s = inst.direction * (0.06 + 0.1 * inst.tempo) * g.width
    cy = half_height + 2 + inst.y * (g.height - 2 * half_height - 4)
    stripes = 0.5 + 0.5 * np.cos(2 * np.pi * ((g.x - speed_px_s * t_s) / wavelength_px + inst.phase))  # [n, 1, W]
    coverage = np.broadcast_to(_edge(np.abs(g.y - cy) - half_height), (t_s.shape[0], g.height, g.width))
    level = (0.35 + 0.65 * stripes)[..., None]  # [n, 1, W, 1]: dark stripes stay chromatic
    return coverage, level * inst.rgb


@dataclass(frozen=True)
class ActionClass:
    """What a class looks like and how it is described."""

    name: str
    hue_deg: float
    colors: tuple[str, ...]  # colour words of the hue family
    look: str  # one line for describe()
    templates: tuple[str, ...]  # sentences with {color}, {size} and {speed} slots
    draw: Callable[[ActionInstance, Array, _Grid], Drawing]


ACTION_CLASSES: dict[str, ActionClass] = {c.name: c for c in [
    ActionClass(
        "bounce", 0.0, ("red", "scarlet"), "a red ball bouncing up and down",
        ("a {size} {color} ball bounces up and down", "the {color} ball keeps bouncing",
         "a {color} ball bounces {speed} on the floor", "someone bounces a {size} {color} ball",
         "the {color} ball hops up and down {speed}"),
        _draw_bounce),
    ActionClass(
        "slide_right", 320.0, ("pink", "magenta"), "a pink square crossing to the right",
        ("a {size} {color} square slides to the right", "the {color} block moves from left to right",
         "a {color} square glides rightward {speed}", "the {color} box crosses the screen to the right",
         "a {size} {color} square drifts right {speed}"),
        lambda inst, t_s, g: _draw_slide(inst, t_s, g, +1)),
    ActionClass(
        "slide_left", 230.0, ("blue", "cobalt"), "a blue square crossing to the left",
        ("a {size} {color} square slides to the left", "the {color} block moves from right to left",
         "a {color} square glides leftward {speed}", "the {color} box crosses the screen to the left",
         "a {size} {color} square drifts left {speed}"),
        lambda inst, t_s, g: _draw_slide(inst, t_s, g, -1)),
    ActionClass(
        "spin", 115.0, ("green", "lime"), "a green bar rotating about its centre",
        ("a {size} {color} bar spins around", "the {color} stick rotates {speed}",
         "a {color} bar turns in circles", "the {size} {color} rod keeps spinning",
         "a {color} bar whirls around its middle {speed}"),
        _draw_spin),
    ActionClass(
        "blink", 55.0, ("yellow", "golden"), "a yellow disc flashing bright and dim",
        ("a {color} light blinks on and off", "the {size} {color} disc flashes {speed}",
         "a {color} circle flickers", "the {color} lamp keeps blinking {speed}",
         "a {size} {color} light flashes"),
        _draw_blink),
    ActionClass(
        "grow", 275.0, ("purple", "violet"), "a purple disc expanding, again and again",
        ("a {color} circle grows bigger", "the {size} {color} disc expands {speed}",
         "a {color} circle swells up", "the {color} dot keeps growing",
         "a {color} disc inflates {speed}"),
        _draw_grow),
    ActionClass(
        "wave", 180.0, ("cyan", "turquoise"), "a cyan band of stripes moving sideways",
        ("{color} stripes move across the screen", "a {size} {color} striped band waves {speed}",
         "a pattern of {color} stripes drifts sideways", "the {color} stripes ripple {speed}",
         "a band of {color} waves flows along"),
        _draw_wave),
]}
CLASS_NAMES = tuple(ACTION_CLASSES)


def _check_classes(classes: Sequence[str] | None) -> list[str]:
    names = list(CLASS_NAMES if classes is None else classes)
    unknown = [c for c in names if c not in ACTION_CLASSES]
    if unknown or not names:
        raise TalInputError(f"unknown action class {unknown[0]!r}: choose from {', '.join(CLASS_NAMES)}"
                            if unknown else f"no action classes given: choose from {', '.join(CLASS_NAMES)}")
    if len(set(names)) != len(names):
        raise TalInputError(f"action classes repeat in {', '.join(names)}")
    return names


def _rngs(seed: int, count: int) -> list[np.random.Generator]:
    """`count` independent generators from one seed (the same for the same seed, always)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(count)]


def plan_instances(actions: Sequence[tuple[str, float, float]], seed: int) -> list[ActionInstance]:
    """Draw each action's look (colour, size, speed, place, phase) from `seed`.

    `render_video(path, actions, seed=s)` draws exactly these; `make_video_set` calls this too, to
    write sentences that match what is on screen.
    """
    rng = _rngs(seed, 2)[0]
    instances = []
    for label, start_s, end_s in actions:
        if label not in ACTION_CLASSES:
            raise TalInputError(f"unknown action class {label!r}: choose from {', '.join(CLASS_NAMES)}")
        cls = ACTION_CLASSES[label]
        scale, tempo, x, y, phase, jitter = rng.random(6)
        instances.append(ActionInstance(
            label=label, start_s=float(start_s), end_s=float(end_s),
            hue_deg=float((cls.hue_deg + (2 * jitter - 1) * HUE_JITTER_DEG) % 360),
            color=str(cls.colors[rng.integers(len(cls.colors))]),
            scale=float(scale), tempo=float(tempo), x=float(x), y=float(y), phase=float(phase),
            direction=int(rng.choice([-1, 1])),
        ))
    return instances


def frame_span(start_s: float, end_s: float, fps: float) -> tuple[int, int]:
    """[first, stop) frame indices whose timestamps i / fps lie in [start_s, end_s)."""
    return (int(math.ceil(start_s * fps - FRAME_TOLERANCE)), int(math.ceil(end_s * fps - FRAME_TOLERANCE)))


# ----------------------------------------------------------------------------------------------
# Drawing and encoding


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

    def render(self, t_s: Array, g: _Grid, rng: np.random.Generator) -> Array:
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
    grid = _Grid(width, height, np.arange(width, dtype=np.float32)[None, None, :],
                 np.arange(height, dtype=np.float32)[None, :, None])
    background_rng = _rngs(seed, 2)[1]
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


def _check_frames(size: tuple[int, int], fps: float) -> int:
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
    fps = _check_frames(size, fps)
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


# ----------------------------------------------------------------------------------------------
# Layouts, sentences and whole sets


def sample_layout(
    rng: np.random.Generator,
    duration_s: float,
    fps: int,
    classes: Sequence[str],
    min_action_s: float,
    max_action_s: float,
    min_gap_s: float,
    max_gap_s: float,
    overlap_prob: float = 0.0,
    repeat_classes: bool = False,
) -> list[tuple[str, float, float]]:
    """Actions (label, start_s, end_s) on the frame grid, placed one after another from a random start.

    Lengths are log-uniform in [min_action_s, max_action_s]; the gap to the next action is uniform in
    [min_gap_s, max_gap_s], except that with probability `overlap_prob` the next action starts 30-70%
    of the way through this one. Without `repeat_classes` a class appears at most once per video (so
    every sentence has one right answer). At least one action, shortened to fit if need be.
    """
    num_frames = int(round(duration_s * fps))
    min_frames = max(1, int(round(min_action_s * fps)))
    order = list(rng.permutation(len(classes)))
    t = min(int(round(rng.uniform(0, max_gap_s) * fps)), max(num_frames - min_frames, 0))
    actions: list[tuple[str, float, float]] = []
    while order:
        label = classes[order.pop(0)]
        if repeat_classes:
            order.append(int(rng.integers(len(classes))))
        length = max(min_frames, int(round(np.exp(rng.uniform(np.log(min_action_s), np.log(max_action_s))) * fps)))
        if t + length > num_frames:
            if actions:
                break
            length = num_frames - t
        actions.append((label, t / fps, (t + length) / fps))
        if rng.random() < overlap_prob:
            t += max(1, int(round(rng.uniform(0.3, 0.7) * length)))
        else:
            t += length + int(round(rng.uniform(min_gap_s, max_gap_s) * fps))
    return actions


def sentences(inst: ActionInstance, rng: np.random.Generator, count: int) -> list[str]:
    """`count` different sentences describing `inst` (its colour word, size and speed where they stand out)."""
    cls = ACTION_CLASSES[inst.label]
    size = "small" if inst.scale < 1 / 3 else "big" if inst.scale > 2 / 3 else ""
    speed = "slowly" if inst.tempo < 1 / 3 else "quickly" if inst.tempo > 2 / 3 else ""
    picks = rng.choice(len(cls.templates), size=min(count, len(cls.templates)), replace=False)
    return [" ".join(cls.templates[k].format(color=inst.color, size=size, speed=speed).split()) for k in picks]


@dataclass
class SyntheticVideoSet:
    """What `make_video_set` wrote."""

    out_dir: Path
    videos: dict[str, Path]  # video id -> mp4
    annotations: Path  # ActivityNet JSON
    grounding: dict[str, Path]  # subset -> JSONL
    codec: str
    num_instances: int
    num_queries: int
    video_seconds: float
    render_seconds: float
    instances: dict[str, list[ActionInstance]] = field(default_factory=dict)


def describe(classes: Sequence[str] | None = None) -> str:
    """A short text on how the synthetic videos are made (written to README.txt of every set)."""
    names = _check_classes(classes)
    lines = [
        "Synthetic action videos (tal.datasets.synthetic_video).",
        f"Background: a nearly grey gradient (saturation {BACKGROUND_SATURATION}) drifting at 0.02-0.06 cycles/s,",
        f"a fixed smooth texture, and Gaussian noise (sigma {NOISE_SIGMA * 255:.1f}/255; one of {NOISE_FRAMES} "
        "images per video,",
        f"picked at random for each frame). Objects have saturated colours (saturation {OBJECT_SATURATION}), so",
        "the only chromatic pixels in a frame belong to actions. Action classes (colour family,",
        f"hue +-{HUE_JITTER_DEG:.0f} deg per instance; size, speed, place, phase and direction random per instance):",
    ]
    lines += [f"  {c:<12} {ACTION_CLASSES[c].look} (hue {ACTION_CLASSES[c].hue_deg:.0f} deg)" for c in names]
    lines += [
        "Layout per video: a random start, then actions one after another, lengths log-uniform between",
        "the minimum and maximum action length, gaps uniform; optional overlaps; by default each class",
        "at most once per video. Times lie on the frame grid; an action [s, e] is drawn on exactly the",
        "frames i with s <= i / fps < e. Each instance gets (by default) one or two sentences from five",
        "phrasings of its class, naming its colour word and, where they stand out, its size and speed.",
        "Files: videos/<id>.mp4, annotations.json (ActivityNet JSON: training/validation),",
        "train.jsonl and val.jsonl (grounding: video, duration, query, segment).",
    ]
    return "\n".join(lines)


def make_video_set(
    out_dir: str | Path,
    num_videos: int,
    seed: int = 0,
    min_duration_s: float = 20.0,
    max_duration_s: float = 40.0,
    classes: Sequence[str] | None = None,
    fps: int = DEFAULT_FPS,
    size: tuple[int, int] = DEFAULT_SIZE,
    val_fraction: float = 0.25,
    min_action_s: float = 1.5,
    max_action_s: float = 10.0,
    min_gap_s: float = 0.5,
    max_gap_s: float = 5.0,
    overlap_prob: float = 0.0,
    repeat_classes: bool = False,
    queries_per_action: tuple[int, int] = (1, 2),
    codec: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> SyntheticVideoSet:
    """Render `num_videos` videos and write their detection and grounding annotations under `out_dir`.

    Deterministic by `seed`: video i depends only on (seed, i) and the settings, so the first videos
    of a larger set equal those of a smaller one. The last round(num_videos * val_fraction) videos
    (at least one when there are two or more) form the "validation" subset, the rest "training".
    Durations in the annotations are the decoded ones (frames / fps).
    """
    from tal.datasets.activitynet import write_activitynet_json
    from tal.datasets.grounding import write_grounding_jsonl
    from tal.datasets.types import DetectionAnnotations, GroundingQuery, VideoAnnotation
    from tal.features.decode import probe_video

    names = _check_classes(classes)
    fps = _check_frames(size, fps)
    if num_videos < 1:
        raise TalInputError(f"--videos {num_videos}: need at least one video")
    if not 0 < min_duration_s <= max_duration_s:
        raise TalInputError(f"durations [{min_duration_s}, {max_duration_s}] s: need 0 < min <= max")
    if not 0 < min_action_s <= max_action_s or not 0 <= min_gap_s <= max_gap_s:
        raise TalInputError(f"action lengths [{min_action_s}, {max_action_s}] s and gaps [{min_gap_s}, {max_gap_s}] s: "
                            "need 0 < min <= max for lengths and 0 <= min <= max for gaps")
    if not 0 <= val_fraction < 1:
        raise TalInputError(f"val_fraction {val_fraction}: must be in [0, 1)")
    low_q, high_q = queries_per_action
    num_val = min(num_videos - 1, max(1, int(round(num_videos * val_fraction)))) if val_fraction > 0 else 0
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    codec = pick_codec(codec)
    videos: dict[str, VideoAnnotation] = {}
    paths: dict[str, Path] = {}
    queries: dict[str, list[GroundingQuery]] = {"training": [], "validation": []}
    all_instances: dict[str, list[ActionInstance]] = {}
    started = time.perf_counter()
    for i in range(num_videos):
        vid = f"syn_{i:04d}"
        video_seed = int(np.random.SeedSequence(seed, spawn_key=(i,)).generate_state(1)[0])
        layout_rng, text_rng = _rngs(video_seed, 4)[2:]
        duration_s = round(layout_rng.uniform(min_duration_s, max_duration_s) * fps) / fps
        layout = sample_layout(layout_rng, duration_s, fps, names, min_action_s, max_action_s,
                               min_gap_s, max_gap_s, overlap_prob, repeat_classes)
        rendered = render_video(out / "videos" / f"{vid}.mp4", layout, duration_s, fps, size, video_seed, codec)
        info = probe_video(rendered.path, "pyav")
        if info.num_frames != rendered.num_frames:
            raise RuntimeError(f"{rendered.path}: encoded {rendered.num_frames} frames but {info.num_frames} decode")
        subset = "validation" if i >= num_videos - num_val else "training"
        segments = np.asarray([[a.start_s, a.end_s] for a in rendered.instances], np.float64).reshape(-1, 2)
        videos[vid] = VideoAnnotation(vid, subset, info.duration, segments, [a.label for a in rendered.instances],
                                      {"fps": fps, "num_frames": info.num_frames})
        for inst in rendered.instances:
            for text in sentences(inst, text_rng, int(text_rng.integers(low_q, high_q + 1))):
                queries[subset].append(GroundingQuery(vid, info.duration, text, (inst.start_s, inst.end_s)))
        paths[vid] = rendered.path
        all_instances[vid] = rendered.instances
        if progress is not None:
            progress(f"{vid}: {info.duration:.1f} s, {len(rendered.instances)} actions ({i + 1}/{num_videos})")
    render_seconds = time.perf_counter() - started
    annotations = DetectionAnnotations(videos, sorted({l for v in videos.values() for l in v.labels}))
    write_activitynet_json(annotations, out / "annotations.json", version=f"tal synthetic_video seed={seed}")
    grounding = {"training": out / "train.jsonl", "validation": out / "val.jsonl"}
    for subset, file in grounding.items():
        write_grounding_jsonl(queries[subset], file)
    (out / "README.txt").write_text(describe(names) + "\n")
    return SyntheticVideoSet(
        out_dir=out, videos=paths, annotations=out / "annotations.json", grounding=grounding, codec=codec,
        num_instances=annotations.num_instances, num_queries=sum(len(q) for q in queries.values()),
        video_seconds=float(sum(v.duration for v in videos.values())), render_seconds=render_seconds,
        instances=all_instances,
    )


# ----------------------------------------------------------------------------------------------
# Command line


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 160x120, got {text!r}") from None
    return width, height


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tal.datasets.synthetic_video",
        description="Render synthetic action videos (mp4) with ActivityNet JSON and grounding JSONL annotations.",
        epilog="example: python -m tal.datasets.synthetic_video data/synthetic --videos 40 --seed 0",
    )
    parser.add_argument("out_dir", help="folder to write videos/, annotations.json, train.jsonl, val.jsonl into")
    parser.add_argument("--videos", type=int, default=20, help="number of videos (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-duration", type=float, default=20.0, help="seconds (default 20)")
    parser.add_argument("--max-duration", type=float, default=40.0, help="seconds (default 40)")
    parser.add_argument("--min-action", type=float, default=1.5, help="seconds (default 1.5)")
    parser.add_argument("--max-action", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("--overlap-prob", type=float, default=0.0,
                        help="probability that an action starts before the previous one ends (default 0)")
    parser.add_argument("--val-fraction", type=float, default=0.25)
    parser.add_argument("--classes", help=f"comma-separated subset of {','.join(CLASS_NAMES)}")
    parser.add_argument("--fps", type=int, default=DEFAULT_FPS)
    parser.add_argument("--size", type=_size, default=DEFAULT_SIZE, help="WIDTHxHEIGHT (default 160x120)")
    parser.add_argument("--codec", choices=CODECS, default="auto", help="auto: libx264 if available, else mpeg4")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = make_video_set(
            args.out_dir, args.videos, seed=args.seed, min_duration_s=args.min_duration,
            max_duration_s=args.max_duration, classes=args.classes.split(",") if args.classes else None,
            fps=args.fps, size=args.size, val_fraction=args.val_fraction, min_action_s=args.min_action,
            max_action_s=args.max_action, overlap_prob=args.overlap_prob, codec=args.codec,
            progress=lambda line: print(line, file=sys.stderr),
        )
    except TalInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    minutes = result.video_seconds / 60
    print(f"{len(result.videos)} videos ({result.video_seconds:.0f} s, {result.codec}), {result.num_instances} "
          f"actions, {result.num_queries} queries in {result.out_dir}; rendered in {result.render_seconds:.1f} s "
          f"({result.render_seconds / minutes:.1f} s per video-minute)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
