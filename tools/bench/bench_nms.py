"""Time tal's temporal NMS on one long video's worth of detections (median of N runs).

Inputs (seeded, 10,000 segments over a 600 s video, 20 classes by default):
  uniform    starts uniform, lengths log-uniform in [1, 60] s, labels and scores uniform: sparse overlaps
  clustered  detector-like: 80% of the segments are jittered copies of 40 actions (70% with the
             action's label), 20% low-scored background: dense same-class clusters
  chain      one class of sliding windows (10 s long, every 2.5 s, so far past --duration) with falling
             scores: the worst case for hard NMS's rounds, as each window's fate waits on the one
             before it (tIoU 0.6 with the next, 0.33 with the one after), so half are kept, in
             N / 2 sequential rounds
Methods: hard NMS per class (no cap: every kept segment is returned), with max_detections, class
agnostic, with score voting; soft NMS (linear, gaussian; score floor 0.001 as in ActionFormer) per
class and class agnostic, capped and not. A row
"torchvision" runs torchvision.ops.batched_nms (compiled C++) on segments as boxes of height 1, which
gives the same keep set: a reference point for the hard rows. Run it alone on the machine:

    flock /tmp/tal-heavy.lock .venv/bin/python tools/bench/bench_nms.py --runs 7 --json bench_nms.json

With `--actionformer CHECKOUT` (happyharrycn/actionformer_release, outside the project; its C++ op is
compiled into --build-dir, `official_actionformer_nms.py`) twelve more rows per scenario time
ActionFormer's own `batched_nms` next to tal's `postprocess_detections` with the same settings:
gaussian soft-NMS (sigma 0.5, floor 0.001) per class and class-agnostic, and hard NMS (tIoU 0.5) per
class, each capped at --max-detections and uncapped, one row per side. ActionFormer caps after its C++ loop has run over every segment;
tal stops once the cap is settled, which is part of what the rows measure. Each row reports the
largest score difference of the two outputs (they rank the same segments; ties are broken apart
differently, and the C++ adds 1e-6 to each length). ActionFormer post-processes 2,000 segments a
video (`pre_nms_topk`): `--num-segments 2000` is its case.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tal.ops.nms import batched_nms, postprocess_detections  # noqa: E402


def uniform(n: int, num_classes: int, duration_s: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    start_s = torch.rand(n, generator=g, dtype=torch.float64) * duration_s
    length_s = torch.exp(torch.rand(n, generator=g, dtype=torch.float64) * torch.log(torch.tensor(60.0)))
    segments = torch.stack([start_s, start_s + length_s], 1).float()
    return segments, torch.rand(n, generator=g), torch.randint(0, num_classes, (n,), generator=g)


def clustered(n: int, num_classes: int, duration_s: float, seed: int, num_actions: int = 40):
    g = torch.Generator().manual_seed(seed)
    action_start_s = torch.rand(num_actions, generator=g) * duration_s
    action_length_s = torch.exp(torch.rand(num_actions, generator=g) * 4.0) + 1.0
    action_label = torch.randint(0, num_classes, (num_actions,), generator=g)
    which = torch.randint(0, num_actions, (n,), generator=g)
    centre_s = action_start_s[which] + action_length_s[which] * (torch.rand(n, generator=g) - 0.5) * 0.6
    length_s = action_length_s[which] * torch.exp(torch.randn(n, generator=g) * 0.25)
    label = torch.where(torch.rand(n, generator=g) < 0.7, action_label[which],
                        torch.randint(0, num_classes, (n,), generator=g))
    score = torch.rand(n, generator=g)
    background = torch.rand(n, generator=g) < 0.2
    centre_s = torch.where(background, torch.rand(n, generator=g) * duration_s, centre_s)
    length_s = torch.where(background, torch.exp(torch.rand(n, generator=g) * 4.0), length_s)
    label = torch.where(background, torch.randint(0, num_classes, (n,), generator=g), label)
    score = torch.where(background, score * 0.3, score)
    segments = torch.stack([centre_s - length_s / 2, centre_s + length_s / 2], 1).clamp(0, duration_s)
    return segments, score, label


def chain(n: int, num_classes: int, duration_s: float, seed: int):
    start_s = torch.arange(n, dtype=torch.float32) * 2.5
    segments = torch.stack([start_s, start_s + 10.0], 1)
    return segments, 1.0 - torch.arange(n, dtype=torch.float32) / n, torch.zeros(n, dtype=torch.long)


SCENARIOS = {"uniform": uniform, "clustered": clustered, "chain": chain}


def methods(max_detections: int) -> list[tuple[str, dict]]:
    cap = dict(max_detections=max_detections)
    soft = dict(score_threshold=0.001, sigma=0.5, iou_threshold=0.5, **cap)
    return [
        ("hard per-class (no cap)", dict(method="hard", iou_threshold=0.5)),
        (f"hard per-class, max {max_detections}", dict(method="hard", iou_threshold=0.5, **cap)),
        ("hard class-agnostic (no cap)", dict(method="hard", iou_threshold=0.5, class_agnostic=True)),
        ("hard per-class + voting 0.75 (no cap)", dict(method="hard", iou_threshold=0.5, voting_threshold=0.75)),
        (f"soft-linear per-class, max {max_detections}", dict(method="soft-linear", **soft)),
        (f"soft-gaussian per-class, max {max_detections}", dict(method="soft-gaussian", **soft)),
        (f"soft-gaussian class-agnostic, max {max_detections}",
         dict(method="soft-gaussian", class_agnostic=True, **soft)),
        (f"soft-gaussian class-agnostic + voting 0.75, max {max_detections}",
         dict(method="soft-gaussian", class_agnostic=True, voting_threshold=0.75, **soft)),
        ("soft-gaussian per-class (no cap)", dict(soft, method="soft-gaussian", max_detections=None)),
        ("soft-gaussian class-agnostic (no cap)",
         dict(soft, method="soft-gaussian", class_agnostic=True, max_detections=None)),
    ]


def timed(runs: int, fn: Callable[[], object]) -> tuple[list[float], object]:
    """Wall times (s) of `runs` calls after one warm-up call, and the last result."""
    result = fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def side_by_side(actionformer, scenario: str, segments, scores, labels, max_detections: int, runs: int) -> list[dict]:
    """ActionFormer's batched_nms and tal's postprocess_detections, same settings, timed in turn, capped
    at max_detections and not (ActionFormer: max_seg_num = every segment)."""
    soft_theirs = dict(iou_threshold=0.5, min_score=0.001, sigma=0.5, use_soft_nms=True)
    soft_ours = dict(method="soft-gaussian", score_threshold=0.001, sigma=0.5, iou_threshold=0.5)
    cases = [  # (name, ActionFormer's keywords, tal's keywords)
        ("soft-gaussian per-class", dict(soft_theirs, multiclass=True), soft_ours),
        ("soft-gaussian class-agnostic", dict(soft_theirs, multiclass=False, voting_thresh=0.0),
         dict(soft_ours, class_agnostic=True)),
        ("hard per-class", dict(iou_threshold=0.5, min_score=0.001, use_soft_nms=False),
         dict(method="hard", iou_threshold=0.5, score_threshold=0.001)),
    ]
    rows = []
    for cap in (max_detections, None):
        for name, theirs, ours in cases:
            their_times, (_, their_scores, _) = timed(runs, lambda: actionformer.batched_nms(
                segments, scores, labels, max_seg_num=cap or len(segments), **theirs))
            our_times, (_, our_scores, _) = timed(runs, lambda: postprocess_detections(
                segments, scores, labels, max_detections=cap, **ours))
            count = min(len(their_scores), len(our_scores))
            diff = float((their_scores[:count].double() - our_scores[:count].double()).abs().max()) if count else 0.0
            their_ms, our_ms = 1000 * statistics.median(their_times), 1000 * statistics.median(our_times)
            capped = f"max {cap}" if cap else "no cap"
            for method, ms, low, kept in ((f"ActionFormer C++ {name}, {capped}", their_ms, 1000 * min(their_times),
                                           len(their_scores)),
                                          (f"tal {name}, {capped} (x{their_ms / our_ms:.2f})", our_ms,
                                           1000 * min(our_times), len(our_scores))):
                rows.append(dict(scenario=scenario, method=method, median_ms=ms, min_ms=low, kept=kept, runs=runs,
                                 max_score_diff=diff, ratio=their_ms / our_ms))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-segments", type=int, default=10_000, help="segments per video (default 10000)")
    parser.add_argument("--num-classes", type=int, default=20, help="classes (default 20)")
    parser.add_argument("--duration", type=float, default=600.0, help="video duration in seconds (default 600)")
    parser.add_argument("--max-detections", type=int, default=200, help="cap for the capped rows (default 200)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per row; the median is reported (default 7)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the rows as JSON")
    parser.add_argument("--actionformer", type=Path, metavar="CHECKOUT",
                        help="an actionformer_release checkout: time its batched_nms (C++ op) side by side")
    parser.add_argument("--build-dir", type=Path, default=Path("/tmp/tal_bench_actionformer_nms"),
                        help="where ActionFormer's op is compiled (default /tmp/tal_bench_actionformer_nms)")
    args = parser.parse_args(argv)
    actionformer = None
    if args.actionformer:
        from official_actionformer_nms import load_actionformer_nms
        actionformer = load_actionformer_nms(args.actionformer, args.build_dir)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import torchvision
    except ImportError:
        torchvision = None

    rows = []
    for scenario in args.scenarios:
        segments, scores, labels = (t.to(args.device) for t in
                                    SCENARIOS[scenario](args.num_segments, args.num_classes, args.duration, args.seed))
        jobs = [(name, lambda kw=kw: postprocess_detections(segments, scores, labels, **kw)[1])
                for name, kw in methods(args.max_detections)]
        jobs.insert(1, ("hard per-class, batched_nms only", lambda: batched_nms(segments, scores, labels, 0.5)))
        if torchvision is not None:
            boxes = torch.stack([segments[:, 0], torch.zeros_like(segments[:, 0]), segments[:, 1],
                                 torch.ones_like(segments[:, 0])], 1)
            jobs.append(("torchvision.ops.batched_nms (compiled; reference)",
                         lambda: torchvision.ops.batched_nms(boxes, scores, labels, 0.5)))
        for name, fn in jobs:
            times, kept = timed(args.runs, fn)
            rows.append(dict(scenario=scenario, method=name, median_ms=1000 * statistics.median(times),
                             min_ms=1000 * min(times), kept=len(kept), runs=args.runs))
        if actionformer is not None:
            rows += side_by_side(actionformer, scenario, segments.cpu(), scores.cpu(), labels.cpu(),
                                 args.max_detections, args.runs)

    header = f"{'scenario':<10} {'method':<58} {'median ms':>10} {'min ms':>8} {'kept':>6}"
    print(f"{args.num_segments} segments, {args.num_classes} classes, {args.duration:g} s, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(header)
    print("-" * len(header))
    for r in rows:
        diff = f" {r['max_score_diff']:9.1e}" if "max_score_diff" in r else ""
        print(f"{r['scenario']:<10} {r['method']:<58} {r['median_ms']:10.2f} {r['min_ms']:8.2f} {r['kept']:6d}{diff}")
    if args.json:
        meta = dict(python=platform.python_version(), torch=torch.__version__, threads=torch.get_num_threads(),
                    machine=platform.machine(), processor=platform.processor(), device=args.device,
                    num_segments=args.num_segments, num_classes=args.num_classes, duration_s=args.duration,
                    runs=args.runs, seed=args.seed)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
