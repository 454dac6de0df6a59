"""`tal train` and `tal eval`: fit a head from a config, or score a checkpoint on the config's data."""
from __future__ import annotations

import argparse
import json

from tal.cli.common import add_device, add_threads, apply_threads, device_of

TRAIN_EXAMPLE = """examples:
  tal train configs/charades_sta/2dtan_pool.yaml --work-dir runs/charades_pool
  tal train configs/thumos14/a2net.yaml --set dataset.features=i3d.h5 train.epochs=20 --device cuda
  tal train configs/synthetic/2dtan.yaml --work-dir runs/x --resume      # continue after a stop
  torchrun --nproc-per-node 2 -m tal train CONFIG --work-dir runs/ddp     # distributed (global batch)

writes DIR/config.yaml, checkpoint_last.pt, checkpoint_best.pt, predictions.json(l), metrics.json, train.log;
prints the evaluation-split metrics as JSON on stdout.
"""
EVAL_EXAMPLE = """example:
  tal eval configs/charades_sta/2dtan_pool.yaml --checkpoint runs/charades_pool/checkpoint_best.pt --out pred.jsonl
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train", help="train a head from a config (checkpoints, resume, metrics)",
        description="Train the head a config names on its dataset; evaluate every eval.interval epochs; keep the "
                    "best checkpoint by eval.metric; write predictions and metrics of the evaluation split.",
        epilog=TRAIN_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("config", help="YAML config (configs/<benchmark>/<model>.yaml)")
    train.add_argument("--work-dir", help="output folder (default: runs/<benchmark>_<model>, from the config path)")
    train.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                       help="override config values, e.g. train.epochs=5 dataset.features=f.h5")
    add_device(train)
    again = train.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from WORK_DIR/checkpoint_last.pt")
    again.add_argument("--overwrite", action="store_true",
                       help="train from scratch into a WORK_DIR that holds a run already, replacing it")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_threads(train)
    train.set_defaults(func=_run_train)

    ev = subparsers.add_parser(
        "eval", help="score a checkpoint on the config's evaluation split",
        description="Predict the evaluation split of a config's dataset with a checkpoint and print the metrics "
                    "as JSON (the same object `tal evaluate` prints for the predictions).",
        epilog=EVAL_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("config", help="YAML config")
    ev.add_argument("--checkpoint", required=True, help="a checkpoint written by tal train")
    ev.add_argument("--out", help="also write the predictions here (.json for detection, .jsonl for grounding)")
    ev.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE")
    add_device(ev)
    add_threads(ev)
    ev.set_defaults(func=_run_eval)


def _run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tal.config import load_config
    from tal.engine.trainer import train

    apply_threads(args)
    cfg = load_config(args.config, args.overrides)
    config = Path(args.config)
    work_dir = args.work_dir or str(Path("runs") / f"{config.parent.name}_{config.stem}")
    metrics = train(cfg, work_dir, device=device_of(args), resume=args.resume, progress=not args.no_progress,
                    overwrite=args.overwrite)
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(metrics))
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from tal.config import load_config
    from tal.engine.trainer import evaluate_checkpoint

    apply_threads(args)
    cfg = load_config(args.config, args.overrides)
    print(json.dumps(evaluate_checkpoint(cfg, args.checkpoint, args.out, device=device_of(args))))
    return 0
