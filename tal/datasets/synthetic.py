"""Synthetic feature-level datasets: a feature cache plus annotations, with no video and no backbone.

`make_detection_set` writes an ActivityNet-JSON detection set and `make_grounding_set` a grounding
(moment retrieval) set in the contract JSONL; both write `features.h5` in the cache layout of
`tal.features.cache`. `make_detection_features` writes the detection signal along the videos and
instances of a real annotation file (e.g. THUMOS14's), for a benchmark's layout without its features.
Training, tests, benchmarks and the demo use them: they take seconds to make, a small model learns
them, and the signal is known (the docstrings below say exactly what it is).

Time. An instance covering feature steps [first, stop) gets the segment whose seconds are the cells of
those steps: feature i is centred at (i*stride + window/2) / fps (DESIGN.md), its cell is that centre
+- stride / 2 frames, so the segment is ((first*stride + (window - stride)/2) / fps,
(stop*stride + (window - stride)/2) / fps), clipped to [0, duration] with duration = T * stride / fps.
A feature lies in an instance exactly when its centre lies in the segment. This needs
window <= 2 * stride (else the last centres would fall after the duration).

Determinism. Every random number comes from one `numpy.random.default_rng(seed)`, drawn in a fixed
order (detection distractors from a generator seeded by one of its draws), and the cache's `created`
attribute is fixed, so the same arguments give byte-identical files.
(The synthetic *videos* of the demo are `tal.datasets.synthetic_video`; this module needs no decoding.)
"""
from __future__ import annotations

import argparse
import json
import math
import numbers
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from tal.datasets.activitynet import read_activitynet_json, write_activitynet_json
from tal.datasets.grounding import write_grounding_jsonl
from tal.datasets.types import DetectionAnnotations, GroundingQuery, VideoAnnotation
from tal.errors import TalInputError
from tal.features.cache import write_feature_cache

# Detection classes, in the order class index -> name (the first `num_classes` are used).
CLASS_NAMES = ("jump", "spin", "throw", "kick", "wave", "clap", "run", "bend",
               "push", "pull", "climb", "swing", "squat", "roll", "lift", "crawl")

# Grounding event types and their phrasings (different words and word orders for one event).
EVENT_PHRASINGS: dict[str, tuple[str, ...]] = {
    "open door": ("a person opens the door", "someone is opening a door", "the door gets opened",
                  "the man pulls the door open"),
    "pour water": ("a person pours water into a glass", "someone is pouring some water", "water gets poured into a cup",
                   "the woman fills a glass with water"),
    "sit down": ("a person sits down on a chair", "someone is sitting down", "the man takes a seat",
                 "a chair is sat on by someone"),
    "answer phone": ("a person picks up the phone", "someone is answering a phone call", "the phone gets answered",
                     "the woman lifts the phone to her ear"),
    "switch on light": ("a person turns on the light", "someone is switching the lamp on",
                        "the light gets switched on", "the man flips the light switch"),
    "read book": ("a person reads a book", "someone is reading a book", "a book is being read",
                  "the woman flips through the pages of a book"),
    "wash dishes": ("a person washes the dishes", "someone is washing a plate in the sink", "the dishes get washed",
                    "the man rinses a cup under the tap"),
    "put on shoes": ("a person puts on shoes", "someone is putting their shoes on", "the shoes get put on",
                     "the woman ties her shoelaces"),
}
EVENT_TYPES = tuple(EVENT_PHRASINGS)

MIN_NUM_STEPS = 16
CLASS_SIGNAL = 2.5  # detection: amplitude of a class signature (noise has std `noise` per dimension)
BOUNDARY_SIGNAL = 2.5  # detection: amplitude of the start / end signatures
BOUNDARY_FRACTION = 0.1  # detection: start / end signatures cover ceil(10%) of an instance's steps
AMPLITUDE_JITTER = (0.75, 1.25)  # per instance / event, times the amplitude
NUM_FOREIGN = 2  # detection: signatures of no class, carried by distractors
WEAK_COPY = 0.3  # detection: a weak distractor carries 0.3x a class signature
DISTRACTOR_PROB = 0.5  # detection: chance that a background gap of >= 4 steps holds a distractor
MAX_INSTANCE_FRACTION = 0.8  # detection: longest instance, as a fraction of the video's steps
EVENT_SIGNAL = 2.0  # grounding: amplitude of an event-type signature
EVENT_FRACTION = (0.08, 0.6)  # grounding: event length, as a fraction of the video's steps
THUMOS14_SCALES = {"num_steps": (160, 256), "min_instance_steps": 6}  # detection: see make_detection_set
NO_TIMESTAMP = "synthetic: no timestamp, so the same seed gives the same bytes"


@dataclass(frozen=True)
class DetectionSet:
    """What `make_detection_set` wrote; `classes` in the order `read_activitynet_json` lists them."""

    features: Path
    annotations: Path
    classes: list[str]


@dataclass(frozen=True)
class GroundingSet:
    """What `make_grounding_set` wrote (`val` is None unless asked for)."""

    features: Path
    train: Path
    test: Path
    val: Path | None


# ----------------------------------------------------------------------------------------------
# Checks


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_features(feature_dim: int, fps: float, stride: int, window: int, seed: int, noise: float) -> None:
    """Checks of the feature, time and noise settings, shared by every maker."""
    if not _is_int(feature_dim) or feature_dim < 1:
        raise TalInputError(f"feature_dim={feature_dim!r}: need a positive integer")
    if not _is_real(fps) or fps <= 0:
        raise TalInputError(f"fps={fps!r}: need a positive number of frames per second")
    for name, value in (("stride", stride), ("window", window)):
        if not _is_int(value) or value < 1:
            raise TalInputError(f"{name}={value!r}: need a positive whole number of frames")
    if not _is_int(seed) or seed < 0:
        raise TalInputError(f"seed={seed!r}: need a non-negative integer")
    if not _is_real(noise) or noise < 0:
        raise TalInputError(f"noise={noise!r}: need a finite standard deviation >= 0")


def _check_common(num_videos: int, feature_dim: int, num_steps: Sequence[int], fps: float, stride: int,
                  window: int, seed: int, noise: float, fraction: float, fraction_name: str) -> tuple[int, int]:
    """Checks shared by the makers that lay out their own videos; returns the (min, max) feature steps per video."""
    if not _is_int(num_videos) or num_videos < 4:
        raise TalInputError(f"num_videos={num_videos!r}: need an integer >= 4 (a training and a held-out split)")
    pair = not isinstance(num_steps, (str, bytes)) and np.ndim(num_steps) == 1 and len(num_steps) == 2 \
        and all(_is_real(v) for v in num_steps)
    if not pair or any(v != int(v) for v in num_steps) or not MIN_NUM_STEPS <= num_steps[0] <= num_steps[1]:
        raise TalInputError(f"num_steps={num_steps!r}: need a pair of whole numbers {MIN_NUM_STEPS} <= min <= max "
                            f"(feature steps per video)")
    _check_features(feature_dim, fps, stride, window, seed, noise)
    if window > 2 * stride:
        raise TalInputError(f"window={window} > 2 * stride={2 * stride}: the last features' centres would lie after "
                            f"the duration T * stride / fps; use window <= 2 * stride")
    if not _is_real(fraction) or not 0 < fraction < 1:
        raise TalInputError(f"{fraction_name}={fraction!r}: need a fraction strictly between 0 and 1")
    return int(num_steps[0]), int(num_steps[1])


def _directions(rng: np.random.Generator, feature_dim: int, count: int, what: str) -> np.ndarray:
    """[count, D] orthonormal random directions (the QR of a Gaussian matrix)."""
    if count > feature_dim:
        raise TalInputError(f"feature_dim={feature_dim} is too small for {what}: need at least {count} "
                            f"(one orthogonal signature direction each)")
    q, r = np.linalg.qr(rng.standard_normal((feature_dim, count)))  # [D, count]
    return (q * np.where(np.diag(r) < 0, -1.0, 1.0)).T  # signs fixed by R's diagonal


# ----------------------------------------------------------------------------------------------
# Layout (feature steps)


def _log_uniform_int(rng: np.random.Generator, low: int, high: int) -> int:
    """An integer in [low, high], rounded from log-uniform on [low, high + 0.5]."""
    value = np.exp(rng.uniform(np.log(low), np.log(high + 0.5)))
    return int(min(max(round(value), low), high))


def _lengths(rng: np.random.Generator, num_steps: int, count: int, min_len: int, max_len: int, min_gap: int,
             first: int | None = None) -> list[int]:
    """`count` lengths that fit in `num_steps` with `min_gap` between them; the first is `first` if given."""
    room = num_steps - (count - 1) * min_gap
    lengths: list[int] = []
    for k in range(count):
        cap = min(max_len, room - sum(lengths) - (count - 1 - k) * min_len)
        if k == 0 and first is not None:
            lengths.append(max(min(first, cap), 1))
        else:
            lengths.append(_log_uniform_int(rng, min(min_len, cap), cap))
    return lengths


def _place(rng: np.random.Generator, num_steps: int, lengths: list[int], min_gap: int) -> np.ndarray:
    """int [K, 2] (first, stop) steps, in time order, the lengths shuffled, gaps >= `min_gap`."""
    lengths_arr = rng.permutation(np.asarray(lengths, dtype=np.int64))  # [K]
    slack = num_steps - int(lengths_arr.sum()) - min_gap * (len(lengths_arr) - 1)
    cuts = np.sort(rng.integers(0, slack + 1, size=len(lengths_arr)))  # [K] extra space before each, cumulative
    first = cuts + np.concatenate([[0], np.cumsum(lengths_arr[:-1] + min_gap)])  # [K]
    return np.stack([first, first + lengths_arr], axis=1)


def _background_gaps(spans: np.ndarray, num_steps: int) -> np.ndarray:
    """int [G, 2] (first, stop) of the steps outside the sorted, disjoint `spans` [K, 2]."""
    edges = np.concatenate([[0], spans.ravel(), [num_steps]]).reshape(-1, 2)  # [K + 1, 2]
    return edges[edges[:, 1] > edges[:, 0]]


def step_spans_to_seconds(spans: np.ndarray, fps: float, stride: int, window: int, duration_s: float) -> np.ndarray:
    """float64 [K, 2] seconds of step spans [K, 2] (first, stop): the cells of those features (module docstring)."""
    offset_frames = (window - stride) / 2
    return np.clip((np.asarray(spans, dtype=np.float64) * stride + offset_frames) / fps, 0.0, duration_s)


def _split_sizes(num_videos: int, fraction: float, extra: bool) -> tuple[int, int]:
    """(held-out, extra held-out) video counts: round(n * fraction) each, >= 1, >= 1 video left to train."""
    held = min(max(1, int(round(num_videos * fraction))), num_videos - 1 - int(extra))
    return held, (min(held, num_videos - held - 1) if extra else 0)


# ----------------------------------------------------------------------------------------------
# Detection


@dataclass(frozen=True)
class _Signatures:
    """The orthonormal directions of a detection set: per class, start, end, and the distractors' own."""

    classes: np.ndarray  # [C, D]
    start: np.ndarray  # [D]
    end: np.ndarray  # [D]
    foreign: np.ndarray  # [NUM_FOREIGN, D]

    @classmethod
    def draw(cls, rng: np.random.Generator, feature_dim: int, num_classes: int) -> "_Signatures":
        directions = _directions(rng, feature_dim, num_classes + 2 + NUM_FOREIGN,
                                 f"{num_classes} classes, start, end and {NUM_FOREIGN} distractor signatures")
        return cls(directions[:num_classes], directions[num_classes], directions[num_classes + 1],
                   directions[num_classes + 2:])


def _merge_spans(spans: np.ndarray) -> np.ndarray:
    """int [K', 2]: the union of (first, stop) spans [K, 2] as sorted, disjoint spans."""
    merged: list[list[int]] = []
    for a, b in sorted(map(tuple, np.asarray(spans).reshape(-1, 2).tolist())):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return np.asarray(merged, dtype=np.int64).reshape(-1, 2)


def _video_features(rng: np.random.Generator, distractor_rng: np.random.Generator | None, num_steps: int,
                    spans: np.ndarray, labels: Sequence[int], sig: _Signatures, noise: float) -> np.ndarray:
    """float64 [T, D]: noise, each instance's class signature with its boundary signatures, and (with a
    `distractor_rng`) distractors in the background gaps (make_detection_set's docstring)."""
    features = noise * rng.standard_normal((num_steps, sig.classes.shape[1]))  # [T, D]
    for (a, b), label in zip(spans, labels):
        features[a:b] += CLASS_SIGNAL * rng.uniform(*AMPLITUDE_JITTER) * sig.classes[label]
        edge = math.ceil(BOUNDARY_FRACTION * (b - a))
        features[a:a + edge] += BOUNDARY_SIGNAL * sig.start
        features[b - edge:b] += BOUNDARY_SIGNAL * sig.end
    if distractor_rng is None:
        return features
    for g0, g1 in _background_gaps(_merge_spans(spans), num_steps):
        if g1 - g0 < 4 or distractor_rng.random() >= DISTRACTOR_PROB:
            continue
        length = int(distractor_rng.integers(2, max(2, min(g1 - g0 - 2, num_steps // 4)) + 1))
        d0 = int(distractor_rng.integers(g0 + 1, g1 - 1 - length + 1))
        if distractor_rng.random() < 0.5:
            signal = CLASS_SIGNAL * sig.foreign[distractor_rng.integers(NUM_FOREIGN)]
        else:
            signal = WEAK_COPY * CLASS_SIGNAL * sig.classes[distractor_rng.integers(len(sig.classes))]
        features[d0:d0 + length] += signal
    return features


def make_detection_set(out_dir: str | Path, num_videos: int = 48, num_classes: int = 4, feature_dim: int = 64,
                       num_steps: tuple[int, int] = (96, 192), fps: float = 30.0, stride: int = 8, window: int = 16,
                       val_fraction: float = 0.25, seed: int = 0, noise: float = 1.0,
                       distractors: bool = True, min_instance_steps: int = 1) -> DetectionSet:
    """Write `out_dir/features.h5` and `out_dir/annotations.json` (ActivityNet JSON) of a detection set.

    Videos `video_0000`, ...: T feature steps each, uniform in `num_steps`; duration T * stride / fps s.
    The last round(num_videos * val_fraction) videos are subset "validation", the rest "training".
    Labels are readable names (jump, spin, throw, kick, ...), every class used at least once when there
    are at least as many instances as classes.

    The signal. Features are Gaussian noise of std `noise` per dimension plus, along orthonormal random
    directions fixed per set:
    - each class has a signature; every step of an instance carries its class signature with amplitude
      2.5 times a per-instance factor uniform in [0.75, 1.25];
    - the first and last ceil(10%) steps of an instance also carry a start or an end signature
      (amplitude 2.5, shared by all classes; a 1-step instance carries both), for boundary heads;
    - distractors (when `distractors`): each background gap of >= 4 steps holds, with probability 0.5,
      a span of 2 to T/4 steps, 1 step clear of instances, carrying either one of two signatures that
      belong to no class (amplitude 2.5) or a weak 0.3x copy of a random class signature (0.75).
      They come from their own generator, so turning them off changes only those spans.
    So an action is a direction, not a large norm (2.5 against sqrt(D) = 8 for 64-d noise); one
    step's evidence is 2.5 standard deviations, a short instance's is weak, a long one's is strong.
    Calibration (seed 0-2, noise 1.0): three dilated conv layers trained per step for 300 full-batch
    Adam steps (~10 s on one CPU thread) reach mAP@0.5 0.56-0.71 and average mAP 0.47-0.59 on the
    validation videos (the 1-3 step instances are the hard part).
    Layout: 1-5 instances per video of random classes, non-overlapping with >= 1 step between them.
    Lengths run from `min_instance_steps` (default 1) to 0.8 T, log-uniform: the first instance of
    each video has its log-length stratified over the set (the videos take the quantiles
    [k/N, (k+1)/N), k < N, in random order), so with N >= 20 videos of T >= 40 steps a 1-step instance and one of >= T/2
    steps are always there; the others are log-uniform up to what still fits (an instance can be
    shorter than `min_instance_steps` only where nothing longer fits). Needs
    feature_dim >= num_classes + 4.
    THUMOS14_SCALES (`num_steps=(160, 256), min_instance_steps=6`) put the shortest fifth of the
    instances at <= ~11 steps, the median at ~25 and the longest fifth at >= ~60, as THUMOS14's test
    instances are at <= 11, 24 and >= 50 I3D steps (stride 4 frames); the default's shortest fifth is
    1-2 steps.
    """
    low, high = _check_common(num_videos, feature_dim, num_steps, fps, stride, window, seed, noise,
                              val_fraction, "val_fraction")
    if not _is_int(min_instance_steps) or not 1 <= min_instance_steps <= MAX_INSTANCE_FRACTION * low:
        raise TalInputError(f"min_instance_steps={min_instance_steps!r}: need a whole number from 1 to "
                            f"{MAX_INSTANCE_FRACTION} x the shortest video ({int(MAX_INSTANCE_FRACTION * low)} steps)")
    if not _is_int(num_classes) or not 1 <= num_classes <= len(CLASS_NAMES):
        raise TalInputError(f"num_classes={num_classes!r}: need 1 to {len(CLASS_NAMES)} "
                            f"({', '.join(CLASS_NAMES)})")
    rng = np.random.default_rng(seed)
    signatures = _Signatures.draw(rng, feature_dim, num_classes)
    distractor_rng = np.random.default_rng(int(rng.integers(2**63)))  # drawn either way: distractors add only

    steps = rng.integers(low, high + 1, size=num_videos)  # [V]
    quantiles = (rng.permutation(num_videos) + rng.random(num_videos)) / num_videos  # [V] stratified
    layouts = []
    for v in range(num_videos):
        t = int(steps[v])
        max_len = max(1, int(MAX_INSTANCE_FRACTION * t))
        log_low = np.log(min_instance_steps)
        first = int(round(np.exp(log_low + quantiles[v] * (np.log(max_len + 0.5) - log_low))))  # log-uniform
        count = int(rng.integers(1, 6))
        layouts.append(_place(rng, t, _lengths(rng, t, count, min_instance_steps, max_len, 1, first=first), 1))
    total = sum(len(spans) for spans in layouts)
    labels_all = rng.permutation(np.arange(total) % num_classes)  # [total] balanced, shuffled
    label_slices = np.split(labels_all, np.cumsum([len(spans) for spans in layouts])[:-1])

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    num_val, _ = _split_sizes(num_videos, val_fraction, extra=False)
    items, videos = [], {}
    for v, (spans, labels) in enumerate(zip(layouts, label_slices)):
        t = int(steps[v])
        features = _video_features(rng, distractor_rng if distractors else None, t, spans, labels, signatures, noise)
        vid = f"video_{v:04d}"
        duration_s = t * stride / fps
        items.append((vid, features.astype(np.float32),
                      {"fps": float(fps), "stride": int(stride), "window": int(window), "duration": duration_s}))
        subset = "validation" if v >= num_videos - num_val else "training"
        seconds = step_spans_to_seconds(spans, fps, stride, window, duration_s)  # [K, 2]
        videos[vid] = VideoAnnotation(vid, subset, duration_s, seconds, [CLASS_NAMES[label] for label in labels])
    classes = sorted({CLASS_NAMES[label] for label in labels_all})
    attrs = {"backbone": "synthetic-detection", "generator": "tal.datasets.synthetic.make_detection_set",
             "seed": int(seed), "noise": float(noise), "num_classes": int(num_classes),
             "distractors": int(bool(distractors)), "fps": float(fps), "stride": int(stride),
             "window": int(window), "created": NO_TIMESTAMP}
    write_feature_cache(out / "features.h5", items, attrs)
    write_activitynet_json(DetectionAnnotations(videos, classes), out / "annotations.json",
                           version=f"tal synthetic detection seed={seed}")
    return DetectionSet(out / "features.h5", out / "annotations.json", classes)


def make_detection_features(annotations: str | Path, out_dir: str | Path, fps: float = 30.0, stride: int = 4,
                            window: int = 16, feature_dim: int = 64, seed: int = 0, noise: float = 1.0,
                            distractors: bool = True) -> DetectionSet:
    """Synthetic features along a real annotation file: `out_dir/features.h5` + a copy as annotations.json.

    Every video of the ActivityNet-format file `annotations` gets T = floor((duration * fps - window) /
    stride) + 1 feature steps (the cache's time convention, tal.features.cache) carrying
    make_detection_set's signal over its real instances: an instance covers the steps whose centre lies
    in it (at least the step nearest its middle), overlapping instances add up. So the real layout of a
    benchmark (instance lengths and counts, classes, subsets, video lengths) can be trained and scored
    with its config end to end without its features. Classes follow the file's class list; videos
    without a duration are an error naming the video.
    """
    _check_features(feature_dim, fps, stride, window, seed, noise)
    truth = read_activitynet_json(annotations)
    rng = np.random.default_rng(seed)
    signatures = _Signatures.draw(rng, feature_dim, len(truth.classes))
    distractor_rng = np.random.default_rng(int(rng.integers(2**63)))
    label_index = {name: i for i, name in enumerate(truth.classes)}
    items = []
    for vid, video in truth.videos.items():
        if video.duration is None or not video.duration * fps >= window:
            raise TalInputError(f"{annotations}: video {vid!r} has duration {video.duration!r}: need one of at "
                                f"least window / fps = {window / fps:g} s to place its features")
        t = int((video.duration * fps - window) // stride) + 1
        centres = (np.arange(t) * stride + window / 2) / fps  # [T] seconds
        seconds = np.asarray(video.segments, dtype=np.float64).reshape(-1, 2)  # [K, 2]
        first = np.searchsorted(centres, seconds[:, 0], side="left")  # [K]
        stop = np.searchsorted(centres, seconds[:, 1], side="right")  # [K]
        nearest = np.clip(np.round((seconds.mean(axis=1) * fps - window / 2) / stride), 0, t - 1).astype(np.int64)
        empty = stop <= first
        first, stop = np.where(empty, nearest, first), np.where(empty, nearest + 1, stop)
        spans = np.stack([first, stop], axis=1)  # [K, 2]
        features = _video_features(rng, distractor_rng if distractors else None, t, spans,
                                   [label_index[label] for label in video.labels], signatures, noise)
        items.append((vid, features.astype(np.float32), {"fps": float(fps), "stride": int(stride),
                                                         "window": int(window), "duration": float(video.duration)}))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    attrs = {"backbone": "synthetic-detection", "generator": "tal.datasets.synthetic.make_detection_features",
             "annotations": str(annotations), "seed": int(seed), "noise": float(noise),
             "distractors": int(bool(distractors)), "fps": float(fps), "stride": int(stride), "window": int(window),
             "created": NO_TIMESTAMP}
    write_feature_cache(out / "features.h5", items, attrs)
    write_activitynet_json(truth, out / "annotations.json", version=f"tal synthetic features along {annotations}")
    return DetectionSet(out / "features.h5", out / "annotations.json", list(truth.classes))


# ----------------------------------------------------------------------------------------------
# Grounding


def make_grounding_set(out_dir: str | Path, num_videos: int = 60, queries_per_video: int = 3, feature_dim: int = 64,
                       num_steps: tuple[int, int] = (64, 128), fps: float = 30.0, stride: int = 8, window: int = 16,
                       test_fraction: float = 0.25, val: bool = False, seed: int = 0,
                       noise: float = 1.0) -> GroundingSet:
    """Write `out_dir/features.h5`, `train.jsonl`, `test.jsonl` (and `val.jsonl` if `val`) of a grounding set.

    Videos `video_0000`, ...: T feature steps each, uniform in `num_steps`; duration T * stride / fps s.
    Split by video: the last round(num_videos * test_fraction) videos are the test split, the same
    number before them the val split (when `val`), the rest train; no video is in two splits.

    The signal. Features are Gaussian noise of std `noise` per dimension; each of 8 event types (open
    door, pour water, sit down, answer phone, switch on light, read book, wash dishes, put on shoes)
    has an orthonormal random signature direction, fixed per set, and every step of an event carries
    its type's signature with amplitude 2.0 times a per-event factor uniform in [0.75, 1.25]. There is
    no other signal (no boundary marks): the start and end are where the signature appears and fades.
    Layout: 2-4 events per video of distinct types, non-overlapping with >= 1 step between them,
    lengths log-uniform from 8% to 60% of the video (as far as they fit). Queries: each video has
    `queries_per_video` queries, taking its events in random order (round robin), each a phrasing of
    the event's type (4 per type, with different words and word orders, e.g. "a person opens the
    door", "someone is opening a door", "the door gets opened"), different phrasings for repeated
    events. The video holds other events too, so only the sentence tells which segment is right.
    Calibration (seed 0-2, noise 1.0): a bag-of-words text vector gating two conv layers, trained per
    step for 400 full-batch Adam steps (~20 s on one CPU thread), reaches R@1,IoU=0.5 0.71-0.89 and
    mIoU 0.65-0.77 on the test queries; at amplitude 1.5 it was still below 0.4 after 1000 steps.
    Needs feature_dim >= 8.
    """
    low, high = _check_common(num_videos, feature_dim, num_steps, fps, stride, window, seed, noise,
                              test_fraction, "test_fraction")
    if not _is_int(queries_per_video) or queries_per_video < 1:
        raise TalInputError(f"queries_per_video={queries_per_video!r}: need a positive integer")
    rng = np.random.default_rng(seed)
    event_dirs = _directions(rng, feature_dim, len(EVENT_TYPES), f"{len(EVENT_TYPES)} event-type signatures")

    num_test, num_val = _split_sizes(num_videos, test_fraction, extra=bool(val))
    split_of = ["train"] * (num_videos - num_test - num_val) + ["val"] * num_val + ["test"] * num_test
    queries: dict[str, list[GroundingQuery]] = {"train": [], "val": [], "test": []}
    items = []
    for v in range(num_videos):
        t = int(rng.integers(low, high + 1))
        min_len = max(1, int(round(EVENT_FRACTION[0] * t)))
        max_len = max(min_len, int(round(EVENT_FRACTION[1] * t)))
        count = int(rng.integers(2, 5))
        spans = _place(rng, t, _lengths(rng, t, count, min_len, max_len, 1), 1)  # [K, 2]
        types = rng.choice(len(EVENT_TYPES), size=count, replace=False)  # [K] distinct
        features = noise * rng.standard_normal((t, feature_dim))  # [T, D]
        for (a, b), kind in zip(spans, types):
            features[a:b] += EVENT_SIGNAL * rng.uniform(*AMPLITUDE_JITTER) * event_dirs[kind]
        vid = f"video_{v:04d}"
        duration_s = t * stride / fps
        items.append((vid, features.astype(np.float32),
                      {"fps": float(fps), "stride": int(stride), "window": int(window), "duration": duration_s}))
        seconds = step_spans_to_seconds(spans, fps, stride, window, duration_s)  # [K, 2]
        order = rng.permutation(count)  # [K] which event the q-th query describes (round robin)
        phrasing_order = [rng.permutation(len(EVENT_PHRASINGS[EVENT_TYPES[kind]])) for kind in types]
        for q in range(queries_per_video):
            e = int(order[q % count])
            phrasings = EVENT_PHRASINGS[EVENT_TYPES[types[e]]]
            text = phrasings[phrasing_order[e][(q // count) % len(phrasings)]]
            queries[split_of[v]].append(
                GroundingQuery(vid, duration_s, text, (float(seconds[e, 0]), float(seconds[e, 1]))))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    attrs = {"backbone": "synthetic-grounding", "generator": "tal.datasets.synthetic.make_grounding_set",
             "seed": int(seed), "noise": float(noise), "fps": float(fps), "stride": int(stride),
             "window": int(window), "created": NO_TIMESTAMP}
    write_feature_cache(out / "features.h5", items, attrs)
    paths = {split: out / f"{split}.jsonl" for split in ("train", "test")}
    if val:
        paths["val"] = out / "val.jsonl"
    for split, path in paths.items():
        write_grounding_jsonl(queries[split], path)
    return GroundingSet(out / "features.h5", paths["train"], paths["test"], paths.get("val"))


# ----------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tal.datasets.synthetic",
        description="Write a synthetic feature-level dataset (features.h5 + annotations); prints the paths as JSON.",
        epilog="example: python -m tal.datasets.synthetic detection data/syn_det --videos 48 --seed 0",
    )
    parser.add_argument("task", choices=("detection", "grounding"))
    parser.add_argument("out_dir", help="folder to write features.h5 and the annotation files into")
    parser.add_argument("--videos", type=int, help="number of videos (default 48 for detection, 60 for grounding)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--feature-dim", type=int, default=64)
    parser.add_argument("--noise", type=float, default=1.0, help="std of the Gaussian noise (default 1.0)")
    parser.add_argument("--steps", type=int, nargs=2, metavar=("MIN", "MAX"),
                        help="feature steps per video, uniform in [MIN, MAX] (default 96 192 for detection, "
                             "see make_grounding_set for grounding)")
    parser.add_argument("--min-instance-steps", type=int,
                        help="detection: shortest instance in feature steps (default 1; 6 with --steps 160 256 "
                             "gives THUMOS14-like scales)")
    parser.add_argument("--val", action="store_true", help="grounding: also write val.jsonl")
    along = parser.add_argument_group("detection features along a real annotation file (make_detection_features)")
    along.add_argument("--along", metavar="ANNOTATIONS.json",
                       help="synthesize features for the videos and instances of this ActivityNet-format file "
                            "instead of a random layout (e.g. ActionFormer's thumos14_actionformer.json)")
    along.add_argument("--fps", type=float, help="with --along: frames per second (default 30)")
    along.add_argument("--stride", type=int, help="with --along: frames between features (default 4)")
    along.add_argument("--window", type=int, help="with --along: frames per feature (default 16)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.val and args.task != "grounding":
        parser.error("--val applies to grounding sets only (detection sets hold a 'validation' subset already)")
    if args.min_instance_steps is not None and args.task != "detection":
        parser.error("--min-instance-steps applies to detection sets only")
    if args.along is not None and (args.task != "detection" or args.videos is not None or args.steps is not None
                                   or args.min_instance_steps is not None):
        parser.error("--along applies to detection sets and takes the videos and instances from the file "
                     "(no --videos, --steps or --min-instance-steps)")
    timing = {k: v for k, v in (("fps", args.fps), ("stride", args.stride), ("window", args.window)) if v is not None}
    if timing and args.along is None:
        parser.error("--fps, --stride and --window apply with --along only")
    common = {"feature_dim": args.feature_dim, "seed": args.seed, "noise": args.noise}
    if args.videos is not None:
        common["num_videos"] = args.videos
    if args.steps is not None:
        common["num_steps"] = tuple(args.steps)
    try:
        if args.task == "detection":
            if args.along is not None:
                det = make_detection_features(args.along, args.out_dir, **timing, **common)
            else:
                extra = {} if args.min_instance_steps is None else {"min_instance_steps": args.min_instance_steps}
                det = make_detection_set(args.out_dir, **common, **extra)
            result = {"features": str(det.features), "annotations": str(det.annotations), "classes": det.classes}
        else:
            gro = make_grounding_set(args.out_dir, val=args.val, **common)
            result = {"features": str(gro.features), "train": str(gro.train), "test": str(gro.test),
                      "val": None if gro.val is None else str(gro.val)}
    except TalInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
