"""One training step of a small head, eager against `torch.compile` (train.compile), on the CPU or CUDA.

For each head: its synthetic config (configs/synthetic/<head>.yaml) on a generated synthetic set, two
copies of the model with the same initial weights, one of them through `tal.engine.trainer.compile_model`
(the probe, then torch.compile with inductor's defaults). Each copy sees the same --batches training
batches in turn (detection batches hold different numbers of instances, so the compiled copy also
meets its recompiles). The first pass over the batches is the warm-up (for the compiled copy: the
compilation, reported as `warm-up s`); then --steps steps alternate eager and compiled step by step, so
both share the machine's load. A step is what the trainer runs: forward, loss, backward, clipping at
train.clip_grad_norm, optimiser step.

    nice .venv/bin/python tools/bench/bench_compile.py --heads 2dtan a2net --steps 10 --json bench_compile.json
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def bench_head(head: str, sets: dict, device, batches: int, steps: int, batch_size: int) -> dict:
    """Median step seconds eager and compiled, the compiled copy's warm-up seconds, their ratio."""
    import torch

    from device_suite import head_config, sync
    from tal.engine.optim import build_optimizer
    from tal.engine.trainer import compile_model
    from tal.tasks import build_task
    from tal.tasks.base import to_device

    print(f"head {head} ...", file=sys.stderr, flush=True)
    torch.manual_seed(0)
    cfg = head_config(head, sets, quick=True)
    task = build_task(cfg)
    eager = task.build_model().to(device)
    compiled_model = copy.deepcopy(eager)
    clip = float(cfg["train"].get("clip_grad_norm", 0.0))
    size = min(batch_size, task.num_train_items())
    generator = torch.Generator().manual_seed(0)
    inputs = [to_device(task.train_batch(eager, torch.randperm(task.num_train_items(), generator=generator)[:size]
                                         .tolist()), device) for _ in range(batches)]
    runs = {"eager": (eager, eager, build_optimizer(eager, cfg["train"])),
            "compiled": (compiled_model, compile_model(compiled_model, device),
                         build_optimizer(compiled_model, cfg["train"]))}

    def step(name: str, batch: dict) -> float:
        model, net, optimizer = runs[name]
        start = time.perf_counter()
        loss = net(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        sync(device)
        return time.perf_counter() - start

    for model, _, _ in runs.values():
        model.train()
    warm = {name: sum(step(name, b) for b in inputs) for name in runs}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(steps):
        for name in (("eager", "compiled") if i % 2 == 0 else ("compiled", "eager")):
            times[name].append(step(name, inputs[i % len(inputs)]))
    eager_s, compiled_s = statistics.median(times["eager"]), statistics.median(times["compiled"])
    return dict(head=head, batch_size=size, batches=batches, steps=steps, warmup_eager_s=warm["eager"],
                warmup_compiled_s=warm["compiled"], eager_step_ms=eager_s * 1e3, compiled_step_ms=compiled_s * 1e3,
                eager_range_ms=[min(times["eager"]) * 1e3, max(times["eager"]) * 1e3],
                compiled_range_ms=[min(times["compiled"]) * 1e3, max(times["compiled"]) * 1e3],
                speedup=eager_s / compiled_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", nargs="+", default=["2dtan", "a2net"], help="heads with a synthetic config")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if CUDA is there")
    parser.add_argument("--batches", type=int, default=4, help="distinct training batches, cycled")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per copy")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/tal_bench_compile"), help="generated inputs")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the rows as JSON")
    args = parser.parse_args(argv)

    import torch

    from device_suite import make_sets

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    args.scratch.mkdir(parents=True, exist_ok=True)
    sets = make_sets(args.scratch, quick=True)
    rows = [bench_head(h, sets, device, args.batches, args.steps, args.batch_size) for h in args.heads]
    print(f"device {device.type}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'head':<8} {'batch':>5} {'eager ms':>9} {'compiled ms':>12} {'speedup':>8} {'warm-up s (eager, compiled)':>28}")
    for r in rows:
        print(f"{r['head']:<8} {r['batch_size']:>5} {r['eager_step_ms']:>9.1f} {r['compiled_step_ms']:>12.1f} "
              f"{r['speedup']:>7.2f}x {r['warmup_eager_s']:>13.2f}, {r['warmup_compiled_s']:.1f}")
    if args.json:
        args.json.write_text(json.dumps(dict(device=device.type, torch=torch.__version__,
                                             threads=torch.get_num_threads(), rows=rows), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
