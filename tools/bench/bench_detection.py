"""Speed and memory of the detection / proposal heads on the CPU: training inputs/s, inference videos/s, peak RSS.

Each head runs its tuned synthetic config (configs/synthetic/<head>.yaml) on a synthetic detection set
(`make_detection_set`, --videos videos of 96-192 feature steps, 64-d; made under --data unless there)
in its own subprocess, so the peak resident memory (`ru_maxrss`) is that head's alone:
  train   training inputs per second (windows or rescaled videos, the config's batch size): forward,
          backward and optimiser step as `tal train` does them, over --train-steps batches after 2
          warm-up batches (data loading included, it is part of a step);
  infer   validation videos per second through `DetectionTask.predict` (windows or rescaling, the
          head, its NMS, merging, seconds), best of --runs after one warm-up pass;
  memory  peak RSS of the subprocess in MiB (Python, torch, the data and both timings), and the RSS
          after importing torch and tal (what any head pays before its first tensor).
torch runs on --threads threads (default 1). Prints a table; `--json` also writes the rows.

    flock /tmp/tal-heavy.lock .venv/bin/python tools/bench/bench_detection.py --json bench_detection.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

HEADS = ("a2net", "s3d", "tcn", "bsnpp", "s2dtan")


def measure(head: str, data: Path, train_steps: int, runs: int, threads: int) -> dict:
    """One head's figures (run in a fresh process: see the module docstring)."""
    import torch

    from tal.config import load_config
    from tal.engine.optim import build_optimizer
    from tal.tasks import build_task

    imports_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # torch and tal alone
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = load_config(REPO / f"configs/synthetic/{head}.yaml",
                      [f"dataset.features={data / 'features.h5'}", f"dataset.annotations={data / 'annotations.json'}"])
    task = build_task(cfg)
    model = task.build_model()
    optimizer = build_optimizer(model, cfg["train"])
    batch_size = int(cfg["train"]["batch_size"])
    generator = torch.Generator().manual_seed(0)

    def step() -> int:
        indices = torch.randint(task.num_train_items(), (batch_size,), generator=generator).tolist()
        out = model(task.train_batch(model, indices))
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        return len(indices)

    model.train()
    for _ in range(2):
        step()
    start = time.perf_counter()
    inputs = sum(step() for _ in range(train_steps))
    train_s = time.perf_counter() - start

    device = torch.device("cpu")
    videos = len(task.video_items("val"))
    task.predict(model, "val", device)
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        task.predict(model, "val", device)
        best = min(best, time.perf_counter() - start)
    return {"head": head, "parameters": sum(p.numel() for p in model.parameters()),
            "mode": task.mode, "input_steps": task.num_steps, "batch_size": batch_size,
            "train_inputs_per_s": inputs / train_s, "train_s": train_s, "train_inputs": inputs,
            "infer_videos_per_s": videos / best, "infer_s": best, "val_videos": videos,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "imports_rss_mib": imports_mib}


def table(rows: list[dict]) -> str:
    lines = [f"{'head':<7} {'params':>8} {'input':>12} {'train inputs/s':>15} {'infer videos/s':>15} "
             f"{'peak RSS MiB':>13} {'after imports':>14}"]
    for r in rows:
        lines.append(f"{r['head']:<7} {r['parameters'] / 1e3:>7.0f}k {r['mode'] + ' ' + str(r['input_steps']):>12} "
                     f"{r['train_inputs_per_s']:>15.1f} {r['infer_videos_per_s']:>15.1f} {r['peak_rss_mib']:>13.0f} "
                     f"{r['imports_rss_mib']:>14.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=HEADS)
    parser.add_argument("--data", default="/tmp/tal_bench_detection", help="synthetic set folder (made if empty)")
    parser.add_argument("--videos", type=int, default=64, help="videos of the set when it is made (default 64)")
    parser.add_argument("--train-steps", type=int, default=10, help="timed training batches (default 10)")
    parser.add_argument("--runs", type=int, default=3, help="inference passes, the best is kept (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--one", choices=HEADS, help=argparse.SUPPRESS)  # internal: measure one head, print JSON
    args = parser.parse_args(argv)
    data = Path(args.data)
    if args.one:
        print(json.dumps(measure(args.one, data, args.train_steps, args.runs, args.threads)))
        return 0

    from tal.datasets.synthetic import make_detection_set

    if not (data / "features.h5").is_file():
        make_detection_set(data, num_videos=args.videos, seed=0)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    rows = []
    for head in args.heads:
        out = subprocess.run([sys.executable, __file__, "--one", head, "--data", str(data), "--train-steps",
                              str(args.train_steps), "--runs", str(args.runs), "--threads", str(args.threads)],
                             capture_output=True, text=True, env=env, check=False)
        if out.returncode:
            print(out.stderr, file=sys.stderr)
            return out.returncode
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"data": str(data), "threads": args.threads,
                                               "train_steps": args.train_steps, "runs": args.runs,
                                               "machine": platform.processor() or platform.machine(),
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
