"""The seven action classes of the synthetic videos: how each looks and moves, and on which frames.

Each class is a coloured object with its own colour family (hue) and its own motion, so the weight-free
`handcrafted` backbone (colour histograms, frame differences, translation, texture orientation) tells
them apart:

  bounce       red ball moving up and down         vertical motion, |sin| trajectory
  slide_right  pink square crossing to the right   horizontal translation, wraps around the frame
  slide_left   blue square crossing to the left    horizontal translation, wraps around the frame
  spin         green bar rotating about its centre rotation: large frame difference, no net translation
  blink        yellow disc flashing bright / dim   brightness change in place
  grow         purple disc expanding, then again   radial motion
  wave         cyan band of moving stripes         fine oriented texture, horizontal motion

Time is exact: an action [start_s, end_s] is drawn on exactly the frames whose timestamp i / fps lies
in [start_s, end_s) (to within 1e-6 of a frame, which absorbs float error in start_s * fps).

Kept apart from encoding (`tal.datasets.synthetic_render`) and from whole sets
(`tal.datasets.synthetic_video`) so that what an action looks like, how it is described and when it
is on screen are defined in one place: `plan_instances` draws each instance's look from a seed, and
each class's `draw` turns an instance and frame times into coverage and colour on numpy grids.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from tal.errors import TalInputError

FRAME_TOLERANCE = 1e-6  # frames
OBJECT_SATURATION = 0.85
OBJECT_VALUE = 0.92
HUE_JITTER_DEG = 6.0

Array = np.ndarray


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
class Grid:
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


def _draw_bounce(inst: ActionInstance, t_s: Array, g: Grid) -> Drawing:
    radius = g.unit * (0.07 + 0.05 * inst.scale)
    period_s = 1.2 - 0.6 * inst.tempo
    floor_y = g.height - radius - 2
    amplitude = (0.6 + 0.4 * inst.y) * (g.height - 2 * radius - 4)
    cx = radius + 2 + inst.x * (g.width - 2 * radius - 4)
    cy = floor_y - amplitude * np.abs(np.sin(np.pi * (t_s / period_s + inst.phase)))  # [n, 1, 1]
    dist = np.sqrt((g.x - cx) ** 2 + (g.y - cy) ** 2)  # [n, H, W]
    return _edge(dist - radius), inst.rgb


def _draw_slide(inst: ActionInstance, t_s: Array, g: Grid, direction: int) -> Drawing:
    half = g.unit * (0.08 + 0.05 * inst.scale)
    speed_px_s = (0.15 + 0.2 * inst.tempo) * g.width
    cx = inst.x * g.width + direction * speed_px_s * t_s  # [n, 1, 1]
    cy = half + 2 + inst.y * (g.height - 2 * half - 4)
    dx = np.mod(g.x - cx + g.width / 2, g.width) - g.width / 2  # [n, 1, W] wraps around the frame
    return _edge(np.abs(dx) - half) * _edge(np.abs(g.y - cy) - half), inst.rgb


def _draw_spin(inst: ActionInstance, t_s: Array, g: Grid) -> Drawing:
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


def _draw_blink(inst: ActionInstance, t_s: Array, g: Grid) -> Drawing:
    radius = g.unit * (0.1 + 0.06 * inst.scale)
    frequency_hz = 1.2 + 1.8 * inst.tempo
    cx = radius + 2 + inst.x * (g.width - 2 * radius - 4)
    cy = radius + 2 + inst.y * (g.height - 2 * radius - 4)
    bright = _fraction(t_s * frequency_hz + inst.phase) < 0.5  # [n, 1, 1]
    level = np.where(bright, 1.0, 0.35).astype(np.float32)[..., None]  # [n, 1, 1, 1] dim stays chromatic
    dist = np.sqrt((g.x - cx) ** 2 + (g.y - cy) ** 2)  # [1, H, W]
    coverage = np.broadcast_to(_edge(dist - radius), (t_s.shape[0], g.height, g.width))
    return coverage, level * inst.rgb


def _draw_grow(inst: ActionInstance, t_s: Array, g: Grid) -> Drawing:
    min_radius = g.unit * 0.06
    max_radius = g.unit * (0.2 + 0.1 * inst.scale)
    period_s = 2.4 - 1.4 * inst.tempo
    cx = max_radius + 2 + inst.x * (g.width - 2 * max_radius - 4)
    cy = max_radius + 2 + inst.y * (g.height - 2 * max_radius - 4)
    radius = min_radius + (max_radius - min_radius) * _fraction(t_s / period_s + inst.phase)  # [n, 1, 1]
    dist = np.sqrt((g.x - cx) ** 2 + (g.y - cy) ** 2)  # [1, H, W]
    return _edge(dist - radius), inst.rgb


def _draw_wave(inst: ActionInstance, t_s: Array, g: Grid) -> Drawing:
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
    draw: Callable[[ActionInstance, Array, Grid], Drawing]


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


def check_classes(classes: Sequence[str] | None) -> list[str]:
    """The class names asked for (all when None), checked against ACTION_CLASSES."""
    names = list(CLASS_NAMES if classes is None else classes)
    unknown = [c for c in names if c not in ACTION_CLASSES]
    if unknown or not names:
        raise TalInputError(f"unknown action class {unknown[0]!r}: choose from {', '.join(CLASS_NAMES)}"
                            if unknown else f"no action classes given: choose from {', '.join(CLASS_NAMES)}")
    if len(set(names)) != len(names):
        raise TalInputError(f"action classes repeat in {', '.join(names)}")
    return names


def seeded_rngs(seed: int, count: int) -> list[np.random.Generator]:
    """`count` independent generators from one seed (the same for the same seed, always)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(count)]


def plan_instances(actions: Sequence[tuple[str, float, float]], seed: int) -> list[ActionInstance]:
    """Draw each action's look (colour, size, speed, place, phase) from `seed`.

    `render_video(path, actions, seed=s)` draws exactly these; `make_video_set` calls this too, to
    write sentences that match what is on screen.
    """
    rng = seeded_rngs(seed, 2)[0]
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
