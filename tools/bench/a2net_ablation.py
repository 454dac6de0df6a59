"""A2Net complementarity ablation: both modules, anchor-based only, anchor-free only, on one detection set.

A2Net's claim is that its anchor-free module finds the instances anchors fit badly (very short and very
long ones) and that both together beat either alone. This trains configs/synthetic/a2net.yaml three
times with `tal train`'s own loop (same seed, same data, same epochs), changing only
`model.anchor_based` / `model.anchor_free`, and scores each run's predictions of the validation videos:
- mAP@0.5 (and average mAP over the config's eval.tiou) against all ground truth;
- mAP@0.5 on only the shortest third and only the longest third of the ground truth by duration
  (thresholds: the 1/3 and 2/3 quantiles of the validation durations, so ties share a side; the
  counts are printed), by DETAD's sensitivity protocol (`tal.eval.detection.evaluate_detection_parts`):
  a detection that finds an instance of another third is left out there, not counted as a false
  positive; a detection of nothing is a false positive everywhere;
- mAP@0.5 on the extremely short (ES, shortest 20%) and extremely long (EL, longest 20%) instances by
  the protocol of the paper's own duration table (its Table 1 scripts in VividLe/A2Net): instances
  sorted by duration and cut into fifths by count; each detection goes to the part of the instance of
  its video (any class) it overlaps most, and a detection that overlaps no instance is dropped; each
  part's detections are scored against that part's instances (a class with instances but no
  detections there scores 0; the paper's scripts delete such classes instead).
Two more rows come from the "both" model without retraining: its anchor-based outputs alone and its
anchor-free outputs alone ("both: AB outputs", "both: AF outputs"). Against the single-module rows they
show what training the modules together does to each; against "both" what merging their detections does.
`--seeds 0,1,2` repeats the three trainings per seed (model initialisation and batch order; the data
stay the same) and reports the mean and range: one seed's differences can be noise.
`--data DIR` holds the set: DIR/features.h5 and DIR/annotations.json (ActivityNet JSON), so real
features work too, e.g. THUMOS14 I3D features imported with `tal import-features` and
`--config configs/thumos14/a2net.yaml --device cuda`. When DIR has no features.h5, a synthetic set is made
there as `python -m tal.datasets.synthetic detection DIR --videos N --seed S` would
(`--thumos-scales`: THUMOS14-like instance lengths, see tal.datasets.synthetic).
Prints a table; `--json` also writes it.

    flock /tmp/tal-heavy.lock .venv/bin/python tools/bench/a2net_ablation.py --data /tmp/syn160 --videos 160 \\
        --seeds 0,1,2 --work-dir /tmp/a2net_ablation --json a2net_ablation.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tal.datasets.types import DetectionAnnotations, VideoAnnotation  # noqa: E402
from tal.eval.detection import evaluate_detection, evaluate_detection_parts  # noqa: E402
from tal.eval.groundtruth import load_subset  # noqa: E402
from tal.eval.predictions import SegmentPredictions, read_segment_predictions  # noqa: E402
from tal.ops.segments import tiou as segment_tiou  # noqa: E402

VARIANTS = {  # name -> overrides
    "both": ["model.anchor_based=true", "model.anchor_free=true"],
    "anchor_based": ["model.anchor_based=true", "model.anchor_free=false"],
    "anchor_free": ["model.anchor_based=false", "model.anchor_free=true"],
}


BRANCHES = {  # rows scored from the "both" model's own outputs -> (file suffix, anchor_based, anchor_free)
    "both: AB outputs": ("AB_outputs", True, False),
    "both: AF outputs": ("AF_outputs", False, True),
}


def duration_thirds(truth: DetectionAnnotations) -> tuple[float, float]:
    """The 1/3 and 2/3 quantiles (seconds) of the ground-truth durations."""
    low, high = np.quantile(instance_durations(truth), [1 / 3, 2 / 3])
    return float(low), float(high)


def instance_durations(truth: DetectionAnnotations) -> np.ndarray:
    """[G] ground-truth durations (s), in the order `evaluate_detection_part`'s `keep` follows."""
    return np.concatenate([np.diff(a.segments.reshape(-1, 2), axis=1)[:, 0] for a in truth.videos.values()])


def duration_fifths(durations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """bool [G] masks of the shortest and the longest fifth by count (the paper's ES and EL: the first
    int(0.2 G) and the last G - int(0.8 G) after a stable sort by duration)."""
    order = np.argsort(durations, kind="stable")
    shortest, longest = np.zeros(len(durations), dtype=bool), np.zeros(len(durations), dtype=bool)
    shortest[order[: int(0.2 * len(durations))]] = True
    longest[order[int(0.8 * len(durations)):]] = True
    return shortest, longest


def nearest_instances(truth: DetectionAnnotations, predictions: SegmentPredictions) -> np.ndarray:
    """[N] the ground-truth instance (index in `instance_durations` order) each prediction overlaps
    most in its video, any class; -1 when it overlaps none (or its video has none)."""
    offsets = np.cumsum([0] + [len(a.labels) for a in truth.videos.values()])
    start = dict(zip(truth.videos, offsets[:-1]))
    out = np.full(predictions.num_predictions, -1, dtype=np.int64)
    video_of = predictions.video_of_each()
    for v, vid in enumerate(predictions.video_ids):
        if vid not in truth.videos or not len(truth.videos[vid].labels):
            continue
        rows = np.flatnonzero(video_of == v)
        overlap = segment_tiou(predictions.segments[rows][:, None, :], truth.videos[vid].segments.reshape(1, -1, 2))
        best = overlap.argmax(axis=1)  # [n]
        hit = overlap[np.arange(len(rows)), best] > 0
        out[rows[hit]] = start[vid] + best[hit]
    return out


def subset_truth(truth: DetectionAnnotations, keep: np.ndarray) -> DetectionAnnotations:
    """The same videos with only the instances where `keep` [G] is True."""
    videos, at = {}, 0
    for vid, a in truth.videos.items():
        mine = keep[at: at + len(a.labels)]
        at += len(a.labels)
        videos[vid] = VideoAnnotation(vid, a.subset, a.duration, a.segments.reshape(-1, 2)[mine],
                                      [label for label, k in zip(a.labels, mine) if k], a.extra)
    return DetectionAnnotations(videos, truth.classes, truth.source)


def subset_predictions(predictions: SegmentPredictions, keep: np.ndarray) -> SegmentPredictions:
    """The predictions where `keep` [N] is True, in file order."""
    counts = np.bincount(predictions.video_of_each()[keep], minlength=len(predictions.video_ids))
    return SegmentPredictions(predictions.video_ids, counts, predictions.segments[keep], predictions.scores[keep],
                              [label for label, k in zip(predictions.labels, keep) if k], predictions.source)


def paper_table_parts(truth: DetectionAnnotations, predictions: SegmentPredictions) -> dict:
    """mAP@0.5 on ES and EL by the paper's duration-table protocol (module docstring)."""
    shortest, longest = duration_fifths(instance_durations(truth))
    nearest = nearest_instances(truth, predictions)
    out = {}
    for name, part in (("ES", shortest), ("EL", longest)):
        mine = (nearest >= 0) & np.append(part, False)[nearest]  # -1 indexes the False pad
        result = evaluate_detection(subset_truth(truth, part), subset_predictions(predictions, mine), np.array([0.5]))
        out[f"mAP@0.5_{name}"] = float(result.mAP[0])
        out[f"instances_{name}"] = int(part.sum())
    return out


def score_parts(truth: DetectionAnnotations, predictions_path: Path, tiou: np.ndarray) -> dict:
    """mAP@0.5 on all / shortest third / longest third of `truth` (DETAD's protocol), and average mAP on all."""
    low, high = duration_thirds(truth)
    predictions = read_segment_predictions(predictions_path, with_labels=True)
    durations = instance_durations(truth)
    parts = {"all": np.ones(len(durations), dtype=bool), "short": durations <= low, "long": durations >= high}
    thresholds = np.union1d(tiou, [0.5])
    out = {}
    results = evaluate_detection_parts(truth, predictions, parts, thresholds)
    for name, keep in parts.items():
        out[f"mAP@0.5_{name}"] = float(results[name].mAP[thresholds == 0.5][0])
        out[f"instances_{name}"] = int(keep.sum())
    out["average_mAP"] = float(results["all"].mAP[np.isin(thresholds, tiou)].mean())  # keeping all = evaluate_detection
    out["short_max_s"], out["long_min_s"] = low, high
    out.update(paper_table_parts(truth, predictions))
    return out


def run(config: str, data: Path, work_dir: Path, extra: list[str], seeds: list[int],
        device: str = "cpu") -> list[dict]:
    """One row per (variant, training seed), plus the two BRANCHES rows from each "both" model."""
    from tal.config import load_config
    from tal.engine.trainer import train
    from tal.tasks.detection import parse_tiou

    paths = [f"dataset.features={data / 'features.h5'}", f"dataset.annotations={data / 'annotations.json'}"]
    shared = load_config(config, [*paths, *extra])  # the variants differ only in model.anchor_based / anchor_free
    truth = load_subset(data / "annotations.json", shared["dataset"]["val_subset"])
    tiou = parse_tiou(shared.get("eval", {}).get("tiou"))
    rows = []
    for seed in seeds:
        for name, overrides in VARIANTS.items():
            cfg = load_config(config, [*paths, f"seed={seed}", *overrides, *extra])
            out_dir = work_dir / f"{name}_seed{seed}"
            start = time.perf_counter()
            train(cfg, out_dir, device=device, progress=False)
            seconds = time.perf_counter() - start
            found = [(name, seconds, out_dir / "predictions.json")]
            if name == "both":
                found += [(branch, 0.0, path) for branch, path in branch_predictions(out_dir, device).items()]
            for variant, train_s, path in found:
                row = {"variant": variant, "seed": seed, "train_s": round(train_s, 1), **score_parts(truth, path, tiou)}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def branch_predictions(out_dir: Path, device: str = "cpu") -> dict[str, Path]:
    """Predictions of the jointly trained model's best checkpoint with only its anchor-based, then only
    its anchor-free outputs (no retraining): BRANCHES name -> predictions file in `out_dir`. Separates
    what training both modules together does to each from what merging their detections does."""
    import torch

    from tal.engine.trainer import load_trained

    task, model, _ = load_trained(out_dir / "checkpoint_best.pt", device, with_data=True)
    out = {}
    for name, (suffix, anchor_based, anchor_free) in BRANCHES.items():
        model.anchor_based, model.anchor_free = anchor_based, anchor_free
        path = out_dir / f"predictions_{suffix}.json"
        task.write_predictions(task.predict(model, task.val_split, torch.device(device)), path)
        out[name] = path
    return out


def summary(rows: list[dict]) -> list[dict]:
    """Per variant: the mean of every figure over the seeds, and each mAP's min and max."""
    out = []
    for name in [*VARIANTS, *BRANCHES]:
        mine = [r for r in rows if r["variant"] == name]
        if not mine:
            continue
        mean = {k: float(np.mean([r[k] for r in mine])) for k in mine[0] if k not in ("variant", "seed")}
        spread = {f"{k}_range": [min(r[k] for r in mine), max(r[k] for r in mine)] for k in mine[0]
                  if k.startswith("mAP") or k == "average_mAP"}
        out.append({"variant": name, "seeds": [r["seed"] for r in mine], **mean, **spread})
    return out


def table(means: list[dict]) -> str:
    """Mean over seeds, with the [min, max] over seeds of mAP@0.5 when there are several."""
    first = means[0]
    several = len(first["seeds"]) > 1

    def cell(r: dict, key: str) -> str:
        low, high = r[f"{key}_range"]
        return f"{r[key]:.3f}" + (f" [{low:.3f}-{high:.3f}]" if several else "")

    width = 21 if several else 7
    lines = [f"short third: <= {first['short_max_s']:.2f} s ({first['instances_short']:.0f} instances), long third: "
             f">= {first['long_min_s']:.2f} s ({first['instances_long']:.0f}), all: {first['instances_all']:.0f}; "
             f"training seeds {first['seeds']}" + (" (mean [min-max])" if several else "")
             + f"; ES / EL: the shortest / longest fifth ({first['instances_ES']:.0f} / {first['instances_EL']:.0f}), "
               "the paper's protocol",
             f"{'variant':<17} {'mAP@0.5':>{width}} {'short':>{width}} {'long':>{width}} {'ES':>{width}} "
             f"{'EL':>{width}} {'avg mAP':>8} {'train s':>8}"]
    for r in means:
        lines.append(f"{r['variant']:<17} {cell(r, 'mAP@0.5_all'):>{width}} {cell(r, 'mAP@0.5_short'):>{width}} "
                     f"{cell(r, 'mAP@0.5_long'):>{width}} {cell(r, 'mAP@0.5_ES'):>{width}} "
                     f"{cell(r, 'mAP@0.5_EL'):>{width}} {r['average_mAP']:>8.3f} "
                     + (f"{r['train_s']:>8.1f}" if r["variant"] in VARIANTS else f"{'-':>8}"))  # branches: no training
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs/synthetic/a2net.yaml"))
    parser.add_argument("--data", required=True, help="folder with features.h5 and annotations.json (a synthetic "
                        "detection set is made there when it has no features.h5)")
    parser.add_argument("--videos", type=int, default=160, help="videos of the set when it is made (default 160)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the set when it is made (default 0)")
    parser.add_argument("--thumos-scales", action="store_true", help="when the set is made: THUMOS14-like "
                        "instance lengths (tal.datasets.synthetic.THUMOS14_SCALES: videos of 160-256 steps, "
                        "instances of >= 6; default 96-192 and >= 1)")
    parser.add_argument("--work-dir", required=True, help="one training folder per variant goes here")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="more config overrides for every variant (e.g. train.epochs=10)")
    parser.add_argument("--seeds", default="0", help="training seeds, comma-separated (default 0); the table "
                        "shows the mean and the range over them")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu", help="torch device for training and prediction (default cpu)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)

    import torch

    from tal.datasets.synthetic import THUMOS14_SCALES, make_detection_set

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    logging.getLogger("tal.train").setLevel(logging.WARNING)
    data = Path(args.data)
    if not (data / "features.h5").is_file():
        scales = THUMOS14_SCALES if args.thumos_scales else {}
        make_detection_set(data, num_videos=args.videos, seed=args.seed, **scales)
    rows = run(args.config, data, Path(args.work_dir), args.overrides, [int(s) for s in args.seeds.split(",")],
               args.device)
    means = summary(rows)
    print(table(means))
    if args.json:
        Path(args.json).write_text(json.dumps({"config": args.config, "data": str(data), "overrides": args.overrides,
                                               "summary": means, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
