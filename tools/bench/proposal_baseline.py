"""Sliding-window proposal baseline: the AR@AN a proposal head has to beat, with no model at all.

Each video gets multi-scale sliding windows: scale k (k = 0 .. num_scales - 1) has windows of
duration / 2**k seconds at a stride of half their length (50% overlap), clipped to the video, so a
video gets 1 + 3 + 7 + ... = sum(2**(k+1) - 1) windows (120 for 6 scales). Windows carry no
evidence, so their order is a choice: `coarse` ranks the long ones first (score 1 / (k + 1)),
`fine` the short ones first, `random` shuffles them (seeded). They are scored by
`tal.eval.proposals.evaluate_proposals` exactly as `tal train` scores a proposal head (AR@1..100,
AUC over tIoU 0.5:0.95:0.05, at most 100 proposals per video on average). The table lists every
(num_scales, order) tried and the best AR@100 among them, so a head is compared with the strongest
of these baselines, not a weak one.

    .venv/bin/python tools/bench/proposal_baseline.py OUT/annotations.json --subset validation --json sw.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tal.datasets.types import DetectionAnnotations  # noqa: E402
from tal.eval.groundtruth import load_subset  # noqa: E402
from tal.eval.predictions import parse_segment_predictions  # noqa: E402
from tal.eval.proposals import evaluate_proposals  # noqa: E402

ORDERS = ("coarse", "fine", "random")


def sliding_windows(duration_s: float, num_scales: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows [N, 2] in seconds and their scale index [N]: duration / 2**k long, stride half of that."""
    segments, scales = [], []
    for k in range(num_scales):
        length = duration_s / 2**k
        starts = np.arange(2 ** (k + 1) - 1) * length / 2  # [2^(k+1) - 1], the last one ends at the duration
        segments.append(np.stack([starts, np.minimum(starts + length, duration_s)], axis=1))
        scales.append(np.full(len(starts), k))
    return np.concatenate(segments), np.concatenate(scales)


def window_proposals(truth: DetectionAnnotations, num_scales: int, order: str, seed: int = 0) -> dict:
    """Contract results {vid: [{"score", "segment"}]} of the sliding windows of every video in `truth`."""
    rng = np.random.default_rng(seed)
    results = {}
    for vid, annotation in truth.videos.items():
        duration = float(annotation.duration or annotation.segments.max(initial=0.0))
        segments, scales = sliding_windows(duration, num_scales)
        if order == "coarse":
            scores = 1.0 / (scales + 1.0)
        elif order == "fine":
            scores = (scales + 1.0) / num_scales
        else:
            scores = rng.random(len(segments))
        results[vid] = [{"score": float(s), "segment": [float(a), float(b)]} for (a, b), s in zip(segments, scores)]
    return results


def baseline_table(truth: DetectionAnnotations, scales: list[int], seed: int = 0) -> list[dict]:
    """One row per (num_scales, order): AR@n and AUC of those windows on `truth`."""
    rows = []
    for num_scales in scales:
        for order in ORDERS:
            parsed = parse_segment_predictions({"results": window_proposals(truth, num_scales, order, seed)},
                                               "sliding windows", with_labels=False)
            metrics = evaluate_proposals(truth, parsed).to_json()
            rows.append({"num_scales": num_scales, "order": order,
                         "windows_per_video": int(sum(2 ** (k + 1) - 1 for k in range(num_scales))), **metrics})
    return rows


def best_row(rows: list[dict]) -> dict:
    return max(rows, key=lambda r: (r["AR@100"], r["AUC"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("annotations", help="ActivityNet-JSON annotations (e.g. a synthetic set's annotations.json)")
    parser.add_argument("--subset", default="validation", help="subset to score (default validation)")
    parser.add_argument("--scales", default="4,5,6,7", help="numbers of scales to try (default 4,5,6,7)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random order")
    parser.add_argument("--json", help="also write the rows and the best one here")
    args = parser.parse_args(argv)
    truth = load_subset(args.annotations, args.subset)
    rows = baseline_table(truth, [int(s) for s in args.scales.split(",")], args.seed)
    print(f"{'scales':>6} {'order':>7} {'win/video':>9} {'AR@1':>6} {'AR@10':>6} {'AR@100':>7} {'AUC':>6}")
    for r in rows:
        print(f"{r['num_scales']:>6} {r['order']:>7} {r['windows_per_video']:>9} {r['AR@1']:>6.3f} {r['AR@10']:>6.3f} "
              f"{r['AR@100']:>7.3f} {r['AUC']:>6.3f}")
    best = best_row(rows)
    print(f"best: {best['num_scales']} scales, {best['order']} first: AR@100 {best['AR@100']:.3f}, "
          f"AUC {best['AUC']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"annotations": args.annotations, "subset": args.subset, "rows": rows,
                                               "best": best}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
