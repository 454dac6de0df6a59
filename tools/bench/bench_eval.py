"""Time tal's evaluators on the reference prediction files (best of N runs).

Two timings per task: `end_to_end_s` reads both files and evaluates (what `tal evaluate` does, less
interpreter start-up); `evaluate_s` scores inputs already in memory (what `tal train` pays per
evaluation). The headline metric is printed next to them so a fast but wrong run shows.

    flock /tmp/tal-heavy.lock .venv/bin/python tools/bench/bench_eval.py --runs 5 --json bench_eval.json

`--official OFFICIAL.json` adds a ratio column from timings of the official evaluators, given as
{"anet_detection": {"seconds": s}, "thumos_detection": {...}, "anet_proposals": {...}}.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchlib import best_of  # noqa: E402

from tal.eval.detection import THUMOS14_TIOU, evaluate_detection, evaluate_detection_files  # noqa: E402
from tal.eval.grounding import evaluate_grounding, evaluate_grounding_files  # noqa: E402
from tal.eval.groundtruth import load_subset  # noqa: E402
from tal.eval.predictions import read_grounding_predictions, read_segment_predictions  # noqa: E402
from tal.eval.proposals import evaluate_proposals, evaluate_proposals_files  # noqa: E402


def tasks(data: Path) -> list[dict]:
    anet_gt = data / "activitynet13/activity_net.v1-3.bsn_derived.json"
    thumos_gt = data / "thumos14/thumos14_actionformer.json"
    ref = data / "reference"
    return [
        dict(name="anet_detection", label="detection ActivityNet-1.3 val (31,335 preds, tIoU .50:.95)",
             files=lambda: evaluate_detection_files(anet_gt, ref / "anet_val_detection_seed1.json", "validation"),
             load=lambda: (load_subset(anet_gt, "validation"),
                           read_segment_predictions(ref / "anet_val_detection_seed1.json")),
             run=lambda gt, pred: evaluate_detection(gt, pred),
             metric=lambda r: ("average_mAP", r.average_mAP)),
        dict(name="thumos_detection", label="detection THUMOS14 test (10,498 preds, tIoU .3:.7)",
             files=lambda: evaluate_detection_files(thumos_gt, ref / "thumos14_test_detection_seed1.json", "Test",
                                                    THUMOS14_TIOU),
             load=lambda: (load_subset(thumos_gt, "Test"),
                           read_segment_predictions(ref / "thumos14_test_detection_seed1.json")),
             run=lambda gt, pred: evaluate_detection(gt, pred, THUMOS14_TIOU),
             metric=lambda r: ("average_mAP", r.average_mAP)),
        dict(name="anet_proposals", label="proposals ActivityNet-1.3 val (472,800 proposals, AN<=100)",
             files=lambda: evaluate_proposals_files(anet_gt, ref / "anet_val_proposals_seed1.json", "validation"),
             load=lambda: (load_subset(anet_gt, "validation"),
                           read_segment_predictions(ref / "anet_val_proposals_seed1.json", with_labels=False)),
             run=lambda gt, pred: evaluate_proposals(gt, pred),
             metric=lambda r: ("AUC", r.auc)),
        dict(name="charades_grounding", label="grounding Charades-STA test (3,720 queries x 16 moments)",
             files=lambda: evaluate_grounding_files(ref / "charades_sta_test_predictions_seed1.jsonl",
                                                    recalls=(1, 5), ious=(0.5, 0.7)),
             load=lambda: (None, read_grounding_predictions(ref / "charades_sta_test_predictions_seed1.jsonl",
                                                            need_segment=True)),
             run=lambda _, pred: evaluate_grounding([p.moments for p in pred], np.array([p.segment for p in pred]),
                                                    recalls=(1, 5), ious=(0.5, 0.7)),
             metric=lambda r: ("R@1,IoU=0.5", r.to_json()["R@1,IoU=0.5"])),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                        help="the shared data folder (default: ../shared/data beside the checkout)")
    parser.add_argument("--runs", type=int, default=5, help="runs per timing; the best is reported (default 5)")
    parser.add_argument("--only", nargs="*", help="task names to run (default: all)")
    parser.add_argument("--official", type=Path, help="JSON of the official evaluators' timings, for a ratio column")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    official = json.loads(args.official.read_text()) if args.official else {}

    rows = []
    for task in tasks(args.data):
        if args.only and task["name"] not in args.only:
            continue
        end_to_end, _ = best_of(args.runs, task["files"])
        gt, pred = task["load"]()
        evaluate_only, result = best_of(args.runs, lambda: task["run"](gt, pred))
        metric, value = task["metric"](result)
        row = dict(task=task["name"], what=task["label"], end_to_end_s=end_to_end, evaluate_s=evaluate_only,
                   metric=metric, value=value, runs=args.runs)
        if task["name"] in official:
            row["official_s"] = official[task["name"]]["seconds"]
            row["speedup_end_to_end"] = row["official_s"] / end_to_end
        rows.append(row)

    header = f"{'task':<62} {'end-to-end s':>12} {'evaluate s':>10} {'official s':>10} {'speed-up':>8}  metric"
    print(header)
    print("-" * len(header))
    for r in rows:
        off = f"{r['official_s']:10.1f} {r['speedup_end_to_end']:7.0f}x" if "official_s" in r else f"{'-':>10} {'-':>8}"
        print(f"{r['what']:<62} {r['end_to_end_s']:12.3f} {r['evaluate_s']:10.3f} {off}  {r['metric']}={r['value']!r}")
    if args.json:
        meta = dict(python=platform.python_version(), numpy=np.__version__, machine=platform.machine(),
                    processor=platform.processor(), runs=args.runs)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
