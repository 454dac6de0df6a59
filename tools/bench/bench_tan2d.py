"""2D-TAN training throughput (queries/s) and peak memory on the CPU, at the paper's sizes.

Rows (the real `tal.models.tan2d` head through `build_tan2d`; one optimisation step = forward, loss,
backward, gradient clipping at 10 and an Adam step, as `tal train` does it):
  paper  hidden 512, 3-layer LSTM over 300-d word vectors (2D-TAN's sizes); N=64 with ActivityNet
         Captions' map K9L4 and frame stride 4, N=128 with TACoS' K5L8 and frame stride 2
  small  the same maps at hidden 128 and a 128-d LSTM (what a CPU run would use)
Inputs are synthetic: random D=500 features for N * frame_stride = 256 steps, random sentences of 5-15
words over a 1,000-word vocabulary, random ground-truth segments; word vectors are learned (no GloVe).

Each row runs in a fresh child process, so its peak memory is its own: the peak resident set size
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`, the kernel's high-water mark of the child, which
includes the interpreter and torch, reported as `base` before the model is built).

At the paper size a step of 32 queries takes a quarter of an hour or more on 2 cores (the masked map
convolution runs 512x512 KxK convs over a padded (N+32)^2 map: about 3e13 FLOPs per forward for 32
queries at N=64), and batch 32 at N=128 needs more memory than a 24 GB machine has: `--batch-size` sets the queries per step (default 2),
throughput is queries/s at that batch (2D and 1D convolutions take ~85% of a step). Run it alone:

    flock /tmp/tal-heavy.lock .venv/bin/python tools/bench/bench_tan2d.py --sizes paper small --json bench_tan2d.json
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

MAPS = {64: dict(frame_stride=4, map_kernel=9, map_layers=4),  # ActivityNet Captions (K9L4)
        128: dict(frame_stride=2, map_kernel=5, map_layers=8)}  # TACoS (K5L8)
SIZES = {"paper": dict(hidden_dim=512, text_dim=512), "small": dict(hidden_dim=128, text_dim=128)}
VOCAB_SIZE = 1000


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_row(size: str, num_clips: int, prop: str, batch_size: int, input_dim: int, warmup: int, steps: int,
            threads: int, seed: int) -> dict:
    """One row, in this process: build the head, time `warmup` + `steps` optimisation steps."""
    import torch

    from tal.models.tan2d import build_tan2d
    from tal.models.text import PAD, UNK, Vocabulary

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    base_mb = peak_rss_mb()
    words = [f"w{i}" for i in range(VOCAB_SIZE)]
    dims = SIZES[size]
    cfg = dict(input_dim=input_dim, num_clips=num_clips, hidden_dim=dims["hidden_dim"], prop=prop,
               loss={"min_iou": 0.5, "max_iou": 1.0}, **MAPS[num_clips],
               text={"encoder": "lstm", "embed_dim": 300, "hidden_dim": dims["text_dim"], "num_layers": 3})
    model = build_tan2d(cfg, vocab=Vocabulary([PAD, UNK] + words)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    num_steps = num_clips * MAPS[num_clips]["frame_stride"]

    def batch() -> dict:
        lengths = torch.randint(5, 16, (batch_size,)).tolist()
        sentences = [" ".join(words[i] for i in torch.randint(0, VOCAB_SIZE, (n,)).tolist()) for n in lengths]
        out = model.prepare_text(sentences)
        out["features"] = torch.randn(batch_size, num_steps, input_dim)  # [B, N * frame_stride, D]
        out["duration"] = torch.rand(batch_size, dtype=torch.float64) * 100 + 20  # [B] s
        bounds = torch.rand(batch_size, 2, dtype=torch.float64).sort(dim=1).values  # [B, 2] fraction
        out["segment"] = bounds * out["duration"][:, None]  # [B, 2] s
        return out

    def step() -> float:
        b = batch()
        start = time.perf_counter()
        loss = model(b)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        return time.perf_counter() - start

    for _ in range(warmup):
        step()
    times = [step() for _ in range(steps)]
    median = statistics.median(times)
    return dict(size=size, num_clips=num_clips, prop=prop, hidden_dim=dims["hidden_dim"],
                map=f"K{MAPS[num_clips]['map_kernel']}L{MAPS[num_clips]['map_layers']}",
                valid_cells=int(model.mask.sum()), params_m=sum(p.numel() for p in model.parameters()) / 1e6,
                batch_size=batch_size, threads=torch.get_num_threads(), warmup=warmup, steps=steps,
                median_step_s=median, min_step_s=min(times), queries_per_s=batch_size / median,
                peak_rss_mb=peak_rss_mb(), base_rss_mb=base_mb)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, nargs="+", default=[64, 128], choices=sorted(MAPS),
                        help="map sizes N (default 64 128)")
    parser.add_argument("--sizes", nargs="+", default=["paper"], choices=list(SIZES),
                        help="model sizes (default paper; add small for hidden 128)")
    parser.add_argument("--prop", default="pool", choices=("pool", "conv"), help="moment features (default pool)")
    parser.add_argument("--batch-size", type=int, default=2, help="queries per step (default 2; the paper trains 32)")
    parser.add_argument("--input-dim", type=int, default=500, help="feature dimension D (default 500, C3D-PCA)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps; the median is reported (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the rows as JSON")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: run one row (JSON args), print its JSON
    args = parser.parse_args(argv)
    if args.row:
        print(json.dumps(run_row(**json.loads(args.row))))
        return 0

    rows = []
    for size in args.sizes:
        for num_clips in args.clips:
            spec = dict(size=size, num_clips=num_clips, prop=args.prop, batch_size=args.batch_size,
                        input_dim=args.input_dim, warmup=args.warmup, steps=args.steps, threads=args.threads,
                        seed=args.seed)
            print(f"running {size} N={num_clips} ...", file=sys.stderr, flush=True)
            done = subprocess.run([sys.executable, __file__, "--row", json.dumps(spec)], capture_output=True,
                                  text=True)
            if done.returncode != 0:  # e.g. killed for memory: report it, keep going
                tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
                rows.append(dict(spec, error=tail))
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    import torch

    print(f"2D-TAN training steps (forward + backward + Adam), {args.prop} variant, batch {args.batch_size}, "
          f"D={args.input_dim}, torch {torch.__version__}, {args.threads} threads, CPU")
    header = (f"{'size':<6} {'N':>4} {'map':<5} {'hidden':>6} {'cells':>6} {'params M':>9} {'median s/step':>14} "
              f"{'queries/s':>10} {'peak RSS MB':>12} {'base MB':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        if "error" in r:
            print(f"{r['size']:<6} {r['num_clips']:>4} failed: {r['error']}")
            continue
        print(f"{r['size']:<6} {r['num_clips']:>4} {r['map']:<5} {r['hidden_dim']:>6} {r['valid_cells']:>6} "
              f"{r['params_m']:>9.1f} {r['median_step_s']:>14.2f} {r['queries_per_s']:>10.3f} "
              f"{r['peak_rss_mb']:>12.0f} {r['base_rss_mb']:>8.0f}")
    print("peak RSS: getrusage ru_maxrss of a fresh process per row (includes the interpreter and torch, "
          "'base' before building the model)")
    if args.json:
        meta = dict(python=platform.python_version(), torch=torch.__version__, threads=args.threads,
                    machine=platform.machine(), processor=platform.processor(), batch_size=args.batch_size,
                    input_dim=args.input_dim, prop=args.prop, warmup=args.warmup, steps=args.steps, seed=args.seed,
                    memory="ru_maxrss (getrusage RUSAGE_SELF) of one child process per row")
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
