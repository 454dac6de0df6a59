"""A2Net training steps/s at the paper's THUMOS14 size, tal next to the official code, same inputs and weights.

Size (configs/thumos14/a2net.yaml, after the official experiments/A2Net_thumos.yaml): windows of 128
I3D features (2048-d), batch 48, 20 classes + background, base 512, pyramid 512-1024-1024-2048-2048-4096,
5 anchor ratios per position, anchor-free head 512 wide; Adam at 1e-4, no clipping. Inputs are random:
features, and per window 1-6 ground-truth segments (random durations of 2-96 feature steps, random
classes). A training step is what each side's train loop does: forward, its own loss (target matching
included), zero_grad, backward, Adam step, loss.item(). The official anchor-free targets come
precomputed from its data files (the code that made them is not in its release), so both sides get
the targets tal's `assign_points` makes, outside the timed step; each side matches its anchors in
its own loss. Both models run in one process, alternating step by step, so they share the machine's
load; medians and ranges of `--steps`.

Before timing, tal's weights are copied into the official model (tools/bench/official_a2net.py says
which parameter goes where) and checked: the raw outputs of both forward passes must agree to float
tolerance, and so must each loss part with the random easy negatives switched off on both sides
(tal draws an exact count of easy negatives, the official code each anchor with a probability, so
with them the anchor-based classification and overlap losses differ by sampling; the timed steps use
the paper's ratio 1).

The official code is imported from a checkout outside the project, never vendored:

    git clone https://github.com/LeYangNwpu/A2Net /tmp/official/A2Net
    nice .venv/bin/python tools/bench/bench_a2net.py --official /tmp/official/A2Net --json bench_a2net.json

Without `--official` only tal is timed. `--quick` is batch 2, no warm-up, one step (a smoke run).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

NUM_STEPS, INPUT_DIM, NUM_CLASSES, MAX_GT = 128, 2048, 20, 30  # MAX_GT: the official MAX_SEGMENT_NUM


def make_inputs(batch_size: int, generator) -> dict:
    """Random windows for tal (features [B, T, D], mask, per-window segments / labels in feature steps)."""
    import torch

    features = torch.randn(batch_size, NUM_STEPS, INPUT_DIM, generator=generator)
    segments, labels = [], []
    for _ in range(batch_size):
        count = int(torch.randint(1, 7, (1,), generator=generator))
        duration = torch.exp(torch.empty(count).uniform_(float(torch.log(torch.tensor(2.0))),
                                                         float(torch.log(torch.tensor(96.0))), generator=generator))
        start = torch.rand(count, generator=generator) * (NUM_STEPS - duration)
        segments.append(torch.stack([start, start + duration], dim=-1))
        labels.append(torch.randint(0, NUM_CLASSES, (count,), generator=generator))
    mask = torch.ones(batch_size, NUM_STEPS, dtype=torch.bool)
    return dict(features=features, mask=mask, segments=segments, labels=labels)


def official_inputs(model, batch: dict) -> dict:
    """The same windows as the official loader delivers them, anchor-free targets from tal's assignment.

    feature [B, D, T]; boxes [B, 30, 3] (start, end in window fractions, 1); label [B, 30] (1-based);
    action_num [B]; cate_label [B, P] long (0 = background); reg_label [B, P, 2] (level-0 steps).
    """
    import torch

    from tal.models.a2net import assign_points, pad_ground_truth
    from tal.models.anchors import anchor_centres_widths

    batch_size = batch["features"].shape[0]
    boxes = torch.zeros(batch_size, MAX_GT, 3)
    label = torch.zeros(batch_size, MAX_GT, dtype=torch.long)
    for b, (seg, lab) in enumerate(zip(batch["segments"], batch["labels"])):
        boxes[b, : len(seg), :2] = seg / NUM_STEPS
        boxes[b, : len(seg), 2] = 1.0
        label[b, : len(lab)] = lab + 1
    gt_segments, gt_labels, gt_valid = pad_ground_truth(batch["segments"], batch["labels"], torch.device("cpu"))
    lengths = model.level_lengths(NUM_STEPS)
    points, _, point_level = anchor_centres_widths(lengths, model.strides, [1.0])
    classes, distances, _ = assign_points(points, point_level, model.af_ranges, gt_segments, gt_labels, gt_valid)
    return dict(feature=batch["features"].transpose(1, 2).contiguous(), boxes=boxes, label=label,
                action_num=torch.tensor([len(s) for s in batch["segments"]]), cate_label=classes,
                reg_label=distances / model.strides[0])


class TalRunner:
    """tal's head: the step of tal.engine.trainer (no AMP, no clipping: the THUMOS14 config has none)."""

    def __init__(self, model):
        import torch

        self.model, self.optimizer = model, torch.optim.Adam(model.parameters(), lr=1e-4)

    def parts(self, inputs: dict) -> dict:
        out = self.model(inputs)
        return {"loss": out["loss"], **{k[len("loss_"):]: v for k, v in out.items() if k.startswith("loss_")}}

    def train_step(self, inputs: dict) -> float:
        """zero_grad, forward and loss, backward, Adam: the official train() loop's order (the same step for
        both sides)."""
        self.model.train()
        self.optimizer.zero_grad()
        loss = self.parts(inputs)["loss"]
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def raw(self, inputs: dict) -> dict:
        import torch

        self.model.eval()
        with torch.no_grad():
            out = self.model.outputs(inputs["features"], inputs["mask"])
        return dict(ab=torch.cat([out["ab_logits"], out["ab_overlap"][..., None], out["ab_offsets"]], dim=-1),
                    af_cls=out["af_logits"], af_reg=out["af_distances"])


class OfficialRunner(TalRunner):
    """The official LocNet, loss (lib/core/function.py's train loop, one batch) and optimiser."""

    def __init__(self, model, cfg, loss_module, match_module):
        import torch

        self.model, self.cfg, self.loss_mod, self.match_mod = model, cfg, loss_module, match_module
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.TRAIN.LR)

    def parts(self, inputs: dict) -> dict:
        cfg, x = self.cfg, inputs
        out_af, out_ab = self.model(x["feature"])
        preds_cls, preds_reg = out_af
        af_cls, af_reg = self.loss_mod.loss_function_af(x["cate_label"], preds_cls, x["reg_label"], preds_reg, cfg)
        matched = self.match_mod_prediction(out_ab, x)
        ab_cls, ab_overlap, ab_loc = self.loss_mod.loss_function_ab(*matched, cfg)
        loss = cfg.TRAIN.P_CLASS_AF * af_cls + af_reg + ab_cls + cfg.TRAIN.P_CONF_AB * ab_overlap \
            + cfg.TRAIN.P_LOC_AB * ab_loc
        return dict(loss=loss, ab_cls=ab_cls, ab_overlap=ab_overlap, ab_loc=ab_loc, af_cls=af_cls, af_reg=af_reg)

    def match_mod_prediction(self, out_ab, x):
        """core.function.ab_prediction_train, called through its parts (core/function.py needs pandas)."""
        import torch

        per_level = [self.match_mod.anchor_bboxes_encode(self.cfg, out_ab[i], x["label"], x["boxes"],
                                                         x["action_num"], name)
                     for i, name in enumerate(self.cfg.MODEL.LAYERS_NAME)]
        match_x, match_w, match_scores, match_labels, anchors_x, anchors_w, overlap, cls = (
            torch.cat([level[k] for level in per_level], dim=1) for k in range(8))
        return anchors_x, anchors_w, overlap, cls, match_x, match_w, match_scores, match_labels


    def raw(self, inputs: dict) -> dict:
        import torch

        self.model.eval()
        with torch.no_grad():
            (cls, reg), ab = self.model(inputs["feature"])
        return dict(ab=torch.cat(ab, dim=1), af_cls=cls, af_reg=reg)


def build_runners(official: Path | None, batch_size: int, seed: int) -> dict:
    """tal's paper-size A2Net and, with a checkout, the official LocNet holding the same weights."""
    import torch

    from tal.models.a2net import build_a2net

    torch.manual_seed(seed)
    model = build_a2net({"input_dim": INPUT_DIM, "num_classes": NUM_CLASSES})  # the THUMOS14 defaults
    runners = {"tal": TalRunner(model)}
    if official is not None:
        from official_a2net import load_official, namespace_config, official_copy

        a2net_module, loss_module, match_module = load_official(official)
        cfg = namespace_config(Path(official) / "experiments" / "A2Net_thumos.yaml", BATCH_SIZE=batch_size)
        runners["official"] = OfficialRunner(official_copy(a2net_module, cfg, model), cfg, loss_module, match_module)
    return runners


def check_equal(runners: dict, inputs: dict) -> dict:
    """Max abs differences of the raw outputs, and both sides' loss parts without easy negatives."""
    import torch

    if "official" not in runners:
        return {}
    ours, theirs = runners["tal"].raw(inputs["tal"]), runners["official"].raw(inputs["official"])
    row = {f"max_abs_diff_{k}": float((ours[k] - theirs[k]).abs().max()) for k in ours}
    row["max_abs_output"] = max(float(v.abs().max()) for v in ours.values())
    tal_model, cfg = runners["tal"].model, runners["official"].cfg
    ratio, tal_model.negative_ratio, cfg.TRAIN.NEGATIVE_RATIO = tal_model.negative_ratio, 0.0, 0.0
    try:
        for runner in runners.values():
            runner.model.train()
        with torch.no_grad():
            row["losses_without_easy_negatives"] = {
                who: {k: float(v) for k, v in runner.parts(inputs[who]).items()} for who, runner in runners.items()}
    finally:
        tal_model.negative_ratio, cfg.TRAIN.NEGATIVE_RATIO = ratio, ratio
    return row


def run(args) -> dict:
    import torch

    runners = build_runners(args.official, args.batch_size, args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    batch = make_inputs(args.batch_size, generator)
    inputs = {"tal": batch}
    if "official" in runners:
        inputs["official"] = official_inputs(runners["tal"].model, batch)
    row = dict(batch_size=args.batch_size, num_steps=NUM_STEPS, input_dim=INPUT_DIM, num_classes=NUM_CLASSES,
               params_m=sum(p.numel() for p in runners["tal"].model.parameters()) / 1e6,
               num_gt=sum(len(s) for s in batch["segments"]), **check_equal(runners, inputs))
    if "official" in runners:
        print(json.dumps(row), file=sys.stderr, flush=True)
    times = {who: [] for who in runners}
    losses = {who: [] for who in runners}
    load = [os.getloadavg()[0]]
    for step in range(args.warmup + args.steps):
        for who, runner in runners.items():
            start = time.perf_counter()
            loss = runner.train_step(inputs[who])
            elapsed = time.perf_counter() - start
            if step >= args.warmup:
                times[who].append(elapsed)
                losses[who].append(loss)
        load.append(os.getloadavg()[0])
    for who, values in times.items():
        median = statistics.median(values)
        row[f"{who}_steps_per_s"] = 1.0 / median
        row[f"{who}_windows_per_s"] = args.batch_size / median
        row[f"{who}_step_s"] = [round(v, 3) for v in values]
        row[f"{who}_step_s_median"] = median
        row[f"{who}_step_s_range"] = [min(values), max(values)]
        row[f"{who}_losses"] = [round(v, 4) for v in losses[who]]
    if "official" in runners:
        row["ratio"] = row["tal_steps_per_s"] / row["official_steps_per_s"]
    row["load_average_1min"] = [round(v, 2) for v in load]
    return row


def print_row(row: dict, args) -> None:
    import torch

    print(f"A2Net training steps at paper size (THUMOS14: {NUM_STEPS} x {INPUT_DIM} features, batch "
          f"{row['batch_size']}, {row['params_m']:.1f} M parameters), {args.threads} threads, torch {torch.__version__}, "
          f"CPU; medians of {args.steps} steps after {args.warmup} warm-up; load average "
          f"{min(row['load_average_1min']):.2f}-{max(row['load_average_1min']):.2f}")
    header = f"{'side':<9} {'steps/s':>8} {'windows/s':>10} {'median s':>9} {'range s':>14}"
    print(header)
    print("-" * len(header))
    for who in ("tal", "official"):
        if f"{who}_steps_per_s" in row:
            low, high = row[f"{who}_step_s_range"]
            print(f"{who:<9} {row[f'{who}_steps_per_s']:>8.3f} {row[f'{who}_windows_per_s']:>10.2f} "
                  f"{row[f'{who}_step_s_median']:>9.3f} {f'{low:.3f}-{high:.3f}':>14}")
    if "ratio" in row:
        diffs = ", ".join(f"{k[len('max_abs_diff_'):]} {v:.1e}" for k, v in row.items() if k.startswith("max_abs_diff_"))
        print(f"ratio tal / official: {row['ratio']:.2f}x; outputs max |diff| {diffs} "
              f"(outputs up to {row['max_abs_output']:.1f})")
        losses = row["losses_without_easy_negatives"]
        print("losses without easy negatives (tal / official): " + ", ".join(
            f"{k} {losses['tal'][k]:.6f} / {losses['official'][k]:.6f}" for k in losses["tal"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, metavar="CHECKOUT",
                        help="a LeYangNwpu/A2Net checkout outside the project (git clone "
                             "https://github.com/LeYangNwpu/A2Net /tmp/official/A2Net); timed side by side")
    parser.add_argument("--batch-size", type=int, default=48, help="windows per step (default 48, the paper's)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per side (default 1)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps; medians are reported (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--quick", action="store_true", help="batch 2, no warm-up, 1 step (a smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the row as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.warmup, args.steps = 2, 0, 1

    import torch

    torch.set_num_threads(args.threads)
    row = run(args)
    print_row(row, args)
    if args.json:
        meta = dict(python=platform.python_version(), torch=torch.__version__, threads=args.threads,
                    machine=platform.machine(), cpu_count=os.cpu_count(), batch_size=args.batch_size,
                    warmup=args.warmup, steps=args.steps, seed=args.seed,
                    official=str(args.official) if args.official else None)
        args.json.write_text(json.dumps({"meta": meta, "rows": [row]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
