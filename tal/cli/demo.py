"""`tal demo`: render synthetic videos, extract features, train and evaluate two heads, query, report."""
from __future__ import annotations

import argparse
import json
import sys

from tal.cli.common import add_device, device_of

EXAMPLE = """example:
  tal demo --out tal-demo          # about 2 minutes on 2 CPU cores; re-running reuses finished steps

prints {"detection": {"mAP@0.5": x, "chance": y}, "grounding": {"R@1,IoU=0.5": x, "chance": y}, "report": path}
and writes DIR/report.md with the metrics, sample queries and pictures (DIR/figures/*.png).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the whole pipeline on built-in synthetic videos (no data or weights needed)",
        description="Render synthetic videos with known actions, extract weight-free features, train A2Net "
                    "(detection) and 2D-TAN (grounding), evaluate them against chance, answer sentence queries "
                    "and write a report with pictures.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="tal-demo", help="output folder (default ./tal-demo)")
    parser.add_argument("--videos", type=int, default=64, help="number of videos to render (default 64)")
    parser.add_argument("--epochs-scale", type=float, default=1.0,
                        help="multiply the training epochs (e.g. 0.2 for a quick look)")
    parser.add_argument("--seed", type=int, default=0)
    add_device(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for training (default 1)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tal.demo import DemoSettings, run_demo

    result = run_demo(DemoSettings(Path(args.out), args.videos, args.epochs_scale, args.seed, device_of(args),
                                   not args.no_progress, args.threads))
    summary = {
        "detection": {"mAP@0.5": result.detection["mAP"]["0.50"], "chance": result.detection_chance["mAP"]["0.50"]},
        "grounding": {"R@1,IoU=0.5": result.grounding["R@1,IoU=0.5"],
                      "chance": result.grounding_chance["R@1,IoU=0.5"]},
        "report": str(result.report), "seconds": {k: round(v, 1) for k, v in result.seconds.items()},
    }
    print(f"detection mAP@0.5 {100 * summary['detection']['mAP@0.5']:.1f}% (chance "
          f"{100 * summary['detection']['chance']:.1f}%); grounding R@1,IoU=0.5 "
          f"{100 * summary['grounding']['R@1,IoU=0.5']:.1f}% (chance {100 * summary['grounding']['chance']:.1f}%); "
          f"report: {result.report}", file=sys.stderr)
    print(json.dumps(summary))
    return 0
