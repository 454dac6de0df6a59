"""Profile one CPU training step of the detection heads at their paper sizes (random inputs).

Heads and sizes (tal's configs; the model section as written, input size of the features they name):
  a2net   configs/thumos14/a2net.yaml       128-step windows, I3D 2048-d, 20 classes, batch 48
  bsnpp   configs/activitynet13/bsnpp.yaml  rescaled to 100 steps, TSP 512-d, batch 16
  tcn     configs/thumos14/tcn.yaml         2304-step windows, I3D 2048-d, 20 classes, batch 2
  s3d     configs/thumos14/s3d.yaml         2304-step windows, I3D 2048-d, 20 classes, batch 2
  s2dtan  configs/activitynet13/s2dtan.yaml rescaled to 128 steps, TSP 512-d, batch 16
Per video 1-6 random ground-truth segments (durations 2% to 75% of the input, random classes); all steps
valid. A step is tal.engine.trainer's: forward with the loss, zero_grad, backward, the config's
optimiser step. `--warmup` untimed steps, then `--steps` timed ones (median and range); the last step
runs under torch.profiler and the top `--top` operators by self CPU time are printed.

    nice .venv/bin/python tools/bench/profile_heads.py --heads bsnpp tcn s3d s2dtan --json profile_heads.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

HEADS = {"a2net": ("configs/thumos14/a2net.yaml", 2048, 20),
         "bsnpp": ("configs/activitynet13/bsnpp.yaml", 512, None),
         "tcn": ("configs/thumos14/tcn.yaml", 2048, 20),
         "s3d": ("configs/thumos14/s3d.yaml", 2048, 20),
         "s2dtan": ("configs/activitynet13/s2dtan.yaml", 512, None)}


def build(head: str, seed: int):
    """(model, optimizer, num_steps, batch_size) for a head at its config's size."""
    import torch

    import tal.models  # noqa: F401  (registers the heads)
    from tal.config import load_config
    from tal.engine.optim import build_optimizer
    from tal.registry import MODELS

    path, input_dim, num_classes = HEADS[head]
    cfg = load_config(REPO / path)
    model_cfg = dict(cfg["model"], input_dim=input_dim)
    if num_classes is not None:
        model_cfg["num_classes"] = num_classes
    torch.manual_seed(seed)
    model = MODELS.get(model_cfg["name"])(model_cfg)
    optimizer = build_optimizer(model, cfg["train"])
    return model, optimizer, int(cfg["dataset"]["num_steps"]), int(cfg["train"]["batch_size"])


def make_batch(num_steps: int, batch_size: int, input_dim: int, num_classes: int, generator) -> dict:
    import torch

    segments, labels = [], []
    for _ in range(batch_size):
        count = int(torch.randint(1, 7, (1,), generator=generator))
        duration = num_steps * (0.02 + 0.73 * torch.rand(count, generator=generator))
        start = torch.rand(count, generator=generator) * (num_steps - duration)
        segments.append(torch.stack([start, start + duration], dim=-1))
        labels.append(torch.randint(0, num_classes, (count,), generator=generator))
    return dict(features=torch.randn(batch_size, num_steps, input_dim, generator=generator),
                mask=torch.ones(batch_size, num_steps, dtype=torch.bool), segments=segments, labels=labels)


def train_step(model, optimizer, batch: dict) -> float:
    model.train()
    loss = model(batch)["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def profile_head(head: str, args) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    model, optimizer, num_steps, batch_size = build(head, args.seed)
    batch_size = args.batch_size or batch_size
    _, input_dim, num_classes = HEADS[head]
    batch = make_batch(num_steps, batch_size, input_dim, num_classes or 1, torch.Generator().manual_seed(args.seed))
    for _ in range(args.warmup):
        train_step(model, optimizer, batch)
    times = []
    for step in range(args.steps):
        if step == args.steps - 1:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                start = time.perf_counter()
                train_step(model, optimizer, batch)
                times.append(time.perf_counter() - start)
        else:
            start = time.perf_counter()
            train_step(model, optimizer, batch)
            times.append(time.perf_counter() - start)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    top = [dict(op=e.key, self_cpu_ms=round(e.self_cpu_time_total / 1e3, 1),
                share=round(e.self_cpu_time_total / total, 3), calls=e.count) for e in events[: args.top]]
    return dict(head=head, config=HEADS[head][0], num_steps=num_steps, batch_size=batch_size, input_dim=input_dim,
                params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                step_s=[round(t, 3) for t in times], step_s_median=statistics.median(times),
                step_s_range=[min(times), max(times)], load_average_1min=round(os.getloadavg()[0], 2), top=top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS))
    parser.add_argument("--batch-size", type=int, help="override the configs' batch sizes")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (the last one profiled; default 3)")
    parser.add_argument("--top", type=int, default=12, help="operators listed per head (default 12)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, metavar="OUT")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for head in args.heads:
        row = profile_head(head, args)
        rows.append(row)
        low, high = row["step_s_range"]
        print(f"{head}: {row['config']}, {row['num_steps']} steps x {row['input_dim']}, batch {row['batch_size']}, "
              f"{row['params_m']} M parameters; step {row['step_s_median']:.3f} s median ({low:.3f}-{high:.3f}), "
              f"load {row['load_average_1min']}")
        for entry in row["top"]:
            print(f"  {entry['op']:<48} {entry['self_cpu_ms']:>10.1f} ms {100 * entry['share']:>5.1f}% "
                  f"{entry['calls']:>7} calls")
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps({"meta": dict(torch=torch.__version__, threads=args.threads,
                                                      warmup=args.warmup, steps=args.steps), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
