"""2D-TAN train and infer queries/s at the paper's sizes, tal next to the official code, same inputs and weights.

Configs (microsoft/2D-TAN's experiments/*.yaml; hidden 512, 3-layer LSTM over 300-d word vectors):
  charades     N=16,  K5L8, 256 features of D=4096 pooled by 16 (VGG)
  activitynet  N=64,  K9L4, 256 features of D=500 pooled by 4 (C3D-PCA)
  tacos        N=128, K5L8, 256 features of D=4096 pooled by 2 (C3D)
each with the `pool` and `conv` moment features. Inputs are random (features, word vectors, sentence
lengths 5-15, ground-truth IoU maps), the same for both models; the official model gets tal's weights.
A training step is forward, rescaled-IoU BCE, backward, gradient clipping at 10 and an Adam step (as
the official train.py); inference is the sigmoid score map under no_grad. Both models run in one
process, alternating step by step, so they share the machine's load; medians and ranges of `--steps`.
Before timing, the outputs are compared: score maps, raw logits (largest difference over the largest
logit) and losses must agree to float tolerance.

The official code is imported from a checkout outside the project, never vendored:

    git clone https://github.com/microsoft/2D-TAN /tmp/official/2D-TAN
    nice .venv/bin/python tools/bench/bench_tan2d.py --official /tmp/official/2D-TAN --configs charades \
        --batch-size 32 --json bench_tan2d.json

Without `--official` only tal is timed. At batch 32 a paper-size ActivityNet or TACoS step takes minutes
on 2 CPU cores; `--batch-size` sets the queries per step.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

CONFIGS = {"charades": dict(num_clips=16, frame_stride=16, input_dim=4096, map_kernel=5, map_layers=8),
           "activitynet": dict(num_clips=64, frame_stride=4, input_dim=500, map_kernel=9, map_layers=4),
           "tacos": dict(num_clips=128, frame_stride=2, input_dim=4096, map_kernel=5, map_layers=8)}
HIDDEN, WORD_DIM = 512, 300


def make_inputs(cfg: dict, batch_size: int, generator) -> dict:
    """Random features [B, T, D], word vectors [B, L, 300] with their mask, IoU targets [B, N, N]."""
    import torch

    from tal.models.tan2d import iou_target_map

    lengths = torch.randint(5, 16, (batch_size,), generator=generator)
    mask = (torch.arange(15)[None] < lengths[:, None]).float()  # [B, L]
    words = torch.randn(batch_size, 15, WORD_DIM, generator=generator) * mask[..., None]
    features = torch.randn(batch_size, cfg["num_clips"] * cfg["frame_stride"], cfg["input_dim"], generator=generator)
    duration = torch.rand(batch_size, generator=generator, dtype=torch.float64) * 100 + 20
    bounds = torch.rand(batch_size, 2, generator=generator, dtype=torch.float64).sort(dim=1).values
    iou = iou_target_map(bounds * duration[:, None], duration, cfg["num_clips"])
    return dict(features=features, words=words, word_mask=mask, iou_targets=iou)


class TalRunner:
    """tal's head behind the two calls the benchmark times."""

    def __init__(self, model):
        import torch

        self.model, self.optimizer = model, torch.optim.Adam(model.parameters(), lr=1e-4)

    def loss(self, inputs: dict):
        return self.model(inputs)["loss"]

    def train_step(self, inputs: dict) -> float:
        import torch

        self.model.train()
        loss = self.loss(inputs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 10.0)
        self.optimizer.step()
        return float(loss.detach())

    def infer(self, inputs: dict):
        self.model.eval()
        return self.model.predict(inputs)


class OfficialRunner(TalRunner):
    """The official TAN, its loss (bce_rescale_loss with MIN_IOU 0.5, MAX_IOU 1.0) and the same optimiser."""

    def loss(self, inputs: dict):
        import torch
        import torch.nn.functional as F

        prediction, mask = self.model(inputs["words"], inputs["word_mask"][..., None], inputs["features"])
        target = ((inputs["iou_targets"][:, None] - 0.5) / 0.5).clamp(0, 1)
        loss = F.binary_cross_entropy(torch.sigmoid(prediction) * mask, target, reduction="none") * mask
        return loss.sum() / mask.sum()

    def infer(self, inputs: dict):
        import torch

        self.model.eval()
        with torch.no_grad():
            prediction, mask = self.model(inputs["words"], inputs["word_mask"][..., None], inputs["features"])
            return (torch.sigmoid(prediction) * mask)[:, 0]


def build_pair(name: str, prop: str, official: Path | None, seed: int):
    """tal's head for a config and, with a checkout, the official model holding the same weights."""
    import torch

    from tal.models.tan2d import build_tan2d

    cfg = CONFIGS[name]
    torch.manual_seed(seed)
    model = build_tan2d(dict(input_dim=cfg["input_dim"], num_clips=cfg["num_clips"], frame_stride=cfg["frame_stride"],
                             hidden_dim=HIDDEN, prop=prop, map_kernel=cfg["map_kernel"], map_layers=cfg["map_layers"],
                             loss={"min_iou": 0.5, "max_iou": 1.0},
                             text={"encoder": "lstm", "embed_dim": WORD_DIM, "hidden_dim": HIDDEN, "num_layers": 3}),
                        vocab=2)
    runners = {"tal": TalRunner(model)}
    if official is not None:
        from official_tan2d import official_copy

        runners["official"] = OfficialRunner(official_copy(official, model, cfg["input_dim"], prop, cfg["map_kernel"],
                                                           cfg["map_layers"]))
    return runners


def check_equal(runners: dict, inputs: dict) -> dict:
    """Largest differences of the score maps, of the raw logits (relative to the largest logit) and the
    losses, before any step changes the weights."""
    import torch

    if "official" not in runners:
        return {}
    ours, theirs = runners["tal"].infer(inputs), runners["official"].infer(inputs)
    with torch.no_grad():
        tal_logits = runners["tal"].model.logits(inputs)
        prediction, mask = runners["official"].model(inputs["words"], inputs["word_mask"][..., None],
                                                     inputs["features"])
        official_logits = (prediction * mask)[:, 0]
    runners["tal"].model.train(), runners["official"].model.train()
    with torch.no_grad():
        loss_ours = float(runners["tal"].loss(inputs))
        loss_theirs = float(runners["official"].loss(inputs))
    logit_diff = float((tal_logits - official_logits).abs().max() / official_logits.abs().max())
    return dict(max_abs_score_diff=float((ours - theirs).abs().max()), max_rel_logit_diff=logit_diff,
                loss_tal=loss_ours, loss_official=loss_theirs)


def time_config(name: str, prop: str, args) -> dict:
    """Both modes of one config: outputs compared, then `warmup` + `steps` alternating timings."""
    import torch

    runners = build_pair(name, prop, args.official, args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    inputs = make_inputs(CONFIGS[name], args.batch_size, generator)
    row = dict(config=name, prop=prop, batch_size=args.batch_size, **CONFIGS[name], **check_equal(runners, inputs))
    for mode in ("train", "infer"):
        times = {who: [] for who in runners}
        for step in range(args.warmup + args.steps):
            for who, runner in runners.items():
                start = time.perf_counter()
                runner.train_step(inputs) if mode == "train" else runner.infer(inputs)
                if step >= args.warmup:
                    times[who].append(time.perf_counter() - start)
        for who, values in times.items():
            median = statistics.median(values)
            row[f"{mode}_{who}_qps"] = args.batch_size / median
            row[f"{mode}_{who}_s"] = [round(v, 3) for v in values]
        if "official" in runners:
            row[f"{mode}_ratio"] = row[f"{mode}_tal_qps"] / row[f"{mode}_official_qps"]
        print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def print_table(rows: list[dict], args) -> None:
    import torch

    print(f"2D-TAN queries/s at paper size (hidden 512), batch {args.batch_size}, {args.threads} threads, "
          f"torch {torch.__version__}, CPU; medians of {args.steps} steps")
    header = f"{'config':<12} {'prop':<5} {'N':>4} {'map':<5} {'mode':<6} {'tal q/s':>9} {'official q/s':>13} " \
             f"{'ratio':>6} {'max |score diff|':>17} {'logit diff / max':>17}"
    print(header)
    print("-" * len(header))
    for r in rows:
        for mode in ("train", "infer"):
            official = r.get(f"{mode}_official_qps")
            ratio = '-' if official is None else f"{r[f'{mode}_ratio']:.2f}x"
            print(f"{r['config']:<12} {r['prop']:<5} {r['num_clips']:>4} K{r['map_kernel']}L{r['map_layers']:<3} "
                  f"{mode:<6} {r[f'{mode}_tal_qps']:>9.3f} "
                  f"{'-' if official is None else f'{official:.3f}':>13} "
                  f"{ratio:>6} "
                  f"{r.get('max_abs_score_diff', float('nan')):>17.2e} "
                  f"{r.get('max_rel_logit_diff', float('nan')):>17.2e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--props", nargs="+", default=["pool", "conv"], choices=("pool", "conv"))
    parser.add_argument("--official", type=Path, metavar="CHECKOUT",
                        help="a microsoft/2D-TAN checkout outside the project (git clone "
                             "https://github.com/microsoft/2D-TAN /tmp/official/2D-TAN); timed side by side")
    parser.add_argument("--batch-size", type=int, default=32, help="queries per step (default 32, the paper's)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model and mode (default 1)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps; medians are reported (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the rows as JSON")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    rows = [time_config(name, prop, args) for name in args.configs for prop in args.props]
    print_table(rows, args)
    if args.json:
        meta = dict(python=platform.python_version(), torch=torch.__version__, threads=args.threads,
                    machine=platform.machine(), batch_size=args.batch_size, warmup=args.warmup, steps=args.steps,
                    seed=args.seed, official=str(args.official) if args.official else None)
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
