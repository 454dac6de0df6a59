"""Post-processing at 1 and 2 torch threads, alone and beside a busy process: before and after pinning.

Work timed (seeded, the same inputs in every condition):
  decode N=16   2D-TAN `decode_moments`, batch 32 score maps 16x16 (Charades-STA), NMS 0.5, top 5
  decode N=64   the same at 64x64 (ActivityNet Captions' sparse map)
  hard 2000     `batched_nms`, 2,000 segments over 600 s, 20 classes, tIoU 0.5
  soft 2000     `soft_nms` gaussian, the same segments, max 200
Conditions: torch threads 1 or 2; "idle" or "busy" (a second process spinning on one core during the
timing); "unpinned" (`tal.ops.threads.POSTPROCESS_THREADS = None`, the code before this change) or
"pinned" (the default: post-processing runs on one intra-op thread). Medians and ranges of --runs.

    nice .venv/bin/python tools/bench/bench_postprocess.py --runs 7 --json bench_postprocess.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import tal.ops.threads as threads  # noqa: E402
from tal.models.tan2d import decode_moments, sparse_map_mask  # noqa: E402
from tal.ops.nms import batched_nms, soft_nms  # noqa: E402


def workloads(seed: int) -> dict:
    """name -> a call doing that work on fixed inputs."""
    g = torch.Generator().manual_seed(seed)
    maps = {n: (torch.rand(32, n, n, generator=g) * sparse_map_mask(n), sparse_map_mask(n)) for n in (16, 64)}
    durations = torch.rand(32, generator=g, dtype=torch.float64) * 100 + 20
    start = torch.rand(2000, generator=g, dtype=torch.float64) * 600
    segments = torch.stack([start, start + torch.rand(2000, generator=g, dtype=torch.float64) * 60 + 1], dim=1)
    scores = torch.rand(2000, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 20, (2000,), generator=g)
    return {"decode N=16": lambda: decode_moments(maps[16][0], durations, 0.5, 5, valid_mask=maps[16][1]),
            "decode N=64": lambda: decode_moments(maps[64][0], durations, 0.5, 5, valid_mask=maps[64][1]),
            "hard 2000": lambda: batched_nms(segments, scores, labels, 0.5),
            "soft 2000": lambda: soft_nms(segments, scores, labels, "gaussian", max_detections=200)}


def time_ms(fn, runs: int) -> list[float]:
    fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed calls per cell (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, metavar="OUT")
    args = parser.parse_args(argv)
    work = workloads(args.seed)
    rows = []
    for load in ("idle", "busy"):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "busy" else None
        try:
            time.sleep(0.2 if spinner else 0)
            for num_threads in (1, 2):
                torch.set_num_threads(num_threads)
                for pinned in (False, True):
                    threads.POSTPROCESS_THREADS = 1 if pinned else None
                    for name, fn in work.items():
                        ms = time_ms(fn, args.runs)
                        rows.append(dict(work=name, load=load, threads=num_threads, pinned=pinned,
                                         median_ms=statistics.median(ms), min_ms=min(ms), max_ms=max(ms)))
        finally:
            if spinner:
                spinner.kill()
                spinner.wait()
    threads.POSTPROCESS_THREADS = 1
    print(f"post-processing, torch {torch.__version__}, medians of {args.runs} (range) ms")
    header = f"{'work':<12} {'load':<5} {'threads':>7} {'unpinned ms':>22} {'pinned ms':>22}"
    print(header)
    print("-" * len(header))
    for r in rows:
        if r["pinned"]:
            continue
        p = next(x for x in rows if x["pinned"] and all(x[k] == r[k] for k in ("work", "load", "threads")))
        cell = lambda x: f"{x['median_ms']:.1f} ({x['min_ms']:.1f}-{x['max_ms']:.1f})"  # noqa: E731
        print(f"{r['work']:<12} {r['load']:<5} {r['threads']:>7} {cell(r):>22} {cell(p):>22}")
    if args.json:
        meta = dict(torch=torch.__version__, runs=args.runs)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
