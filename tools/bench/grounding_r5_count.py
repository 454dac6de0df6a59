"""How many queries R@5 scores on fewer than five moments: tal's grounding pipeline before and after issue 17.

Synthetic, seeded score maps (uniform random scores on 2D-TAN's valid cells; durations uniform in
10-40 s with two decimals, as annotation files give them; ground truth a random segment):
  before  the decoder suppressed in clip units and kept 5, then the evaluator ran NMS again on them in
          float64 seconds: a pair at exactly the threshold in clips can land just above it in seconds,
          and the evaluator had no sixth moment to put in its place (emulated here with the same rule)
  after   one NMS, in the decoder, on the full ranked list, in the seconds it writes (tal now)
Prints per case the queries scored on fewer than 5 moments and R@5,IoU=0.5 before / after.

    .venv/bin/python tools/bench/grounding_r5_count.py --queries 1500
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tal.eval.grounding import evaluate_grounding  # noqa: E402
from tal.models.man import decode_candidates  # noqa: E402
from tal.models.tan2d import decode_moments, sparse_map_mask  # noqa: E402
from tal.ops.ranked_nms import ranked_nms  # noqa: E402


def before(scores: torch.Tensor, cells: torch.Tensor, durations_s: torch.Tensor, num_clips: int,
           threshold: float) -> list[np.ndarray]:
    """The former pipeline: NMS in clip units keeps 5, a second NMS in float64 seconds filters them."""
    ranked, order = scores.sort(dim=1, descending=True, stable=True)
    clips = cells.double()[order]  # [Q, M, 2]
    kept = ranked_nms(clips, None, threshold, 5)  # [Q, 5]
    first = clips.gather(1, kept.clamp(min=0)[..., None].expand(-1, -1, 2)) * (durations_s / num_clips)[:, None, None]
    again = ranked_nms(first, kept >= 0, threshold, 5)
    return [f[k[k >= 0]].numpy() for f, k in zip(first, again)]


def case(name: str, num_queries: int, num_clips: int, threshold: float, seed: int, man: bool) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = sparse_map_mask(num_clips)
    cells = mask.nonzero().double() + torch.tensor([0.0, 1.0])  # [M, 2] (start clip, end clip + 1)
    scores = torch.rand(num_queries, len(cells), generator=g)  # [Q, M]
    durations_s = (torch.rand(num_queries, generator=g, dtype=torch.float64) * 30 + 10).mul(100).round().div(100)
    starts = torch.rand(num_queries, generator=g, dtype=torch.float64) * 0.7
    truth = torch.stack([starts, starts + 0.3], 1) * durations_s[:, None]  # [Q, 2] s
    if man:
        after = decode_candidates(scores, cells, durations_s, num_clips, threshold, 5)
    else:
        score_map = torch.zeros(num_queries, num_clips, num_clips)
        score_map[:, mask] = scores
        after = decode_moments(score_map, durations_s, threshold, 5, valid_mask=mask)
    after = [np.asarray([m[:2] for m in row]).reshape(-1, 2) for row in after]
    old = before(scores, cells, durations_s, num_clips, threshold)
    r5 = {label: evaluate_grounding(moments, truth.numpy(), recalls=(5,), ious=(0.5,), nms_threshold=None).recall[0, 0]
          for label, moments in (("before", old), ("after", after))}
    return {"case": name, "queries": num_queries, "nms": threshold,
            "fewer_than_5_before": int(sum(len(m) < 5 for m in old)),
            "fewer_than_5_after": int(sum(len(m) < 5 for m in after)),
            "R@5,IoU=0.5_before": round(float(r5["before"]), 4), "R@5,IoU=0.5_after": round(float(r5["after"]), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [case("2D-TAN N=16", args.queries, 16, 0.5, args.seed, man=False),
            case("2D-TAN N=64", args.queries, 64, 0.5, args.seed, man=False),
            case("MAN N=16", args.queries, 16, 0.5, args.seed, man=True)]
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
