"""Synthetic videos with known actions: real encoded mp4 files for a demo that needs no data and no weights.

`make_video_set` writes a whole set with ActivityNet JSON (detection) and grounding JSONL (by default
one or two sentences per action instance) and is deterministic by seed; `python -m
tal.datasets.synthetic_video` is its command line. The action classes are in
`tal.datasets.synthetic_actions`; drawing and encoding one video (`render_video`) is in
`tal.datasets.synthetic_render`.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tal.datasets.synthetic_actions import (
    ACTION_CLASSES, CLASS_NAMES, HUE_JITTER_DEG, OBJECT_SATURATION, ActionInstance, check_classes, seeded_rngs,
)
from tal.datasets.synthetic_render import (
    BACKGROUND_SATURATION, CODECS, DEFAULT_FPS, DEFAULT_SIZE, NOISE_FRAMES, NOISE_SIGMA, check_frames, pick_codec,
    render_video,
)
from tal.errors import TalInputError


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
    names = check_classes(classes)
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

    names = check_classes(classes)
    fps = check_frames(size, fps)
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
        layout_rng, text_rng = seeded_rngs(video_seed, 4)[2:]
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
