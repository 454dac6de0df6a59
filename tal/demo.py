"""`tal demo`: the whole pipeline on rendered synthetic videos, with no dataset and no downloaded weights.

Steps, each resumable (re-running skips what is done): render mp4 videos of coloured shapes performing
seven actions at known times (`tal.datasets.synthetic_video`); extract features with the weight-free
`handcrafted` backbone into an HDF5 cache; train A2Net (detection) and 2D-TAN (grounding) with the shared
training loop; evaluate both next to chance baselines; answer a few sentence queries; draw timelines, PR
curves and a 2D-TAN score map; write `report.md`.
"""
from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tal.errors import TalInputError

DETECTION_CONFIG = {
    "task": "detection", "seed": 0,
    "dataset": {"train_subset": "training", "val_subset": "validation", "mode": "window", "num_steps": 64,
                "window_overlap": 0.5, "min_coverage": 0.5},
    "model": {"name": "a2net", "base_dim": 64, "pyramid_dims": [64, 64, 64, 64], "head_dim": 64,
              "anchor_ratios": [0.5, 1.0, 2.0], "nms": {"method": "hard", "iou_threshold": 0.4, "max_detections": 50}},
    "train": {"epochs": 30, "batch_size": 8, "lr": 0.001, "optimizer": "adam", "schedule": "cosine",
              "warmup_epochs": 1, "clip_grad_norm": 10.0},
    "eval": {"tiou": [0.3, 0.4, 0.5, 0.6, 0.7], "metric": "mAP/0.50", "interval": 5},
}
GROUNDING_CONFIG = {
    "task": "grounding", "seed": 0,
    "dataset": {"normalize": True},
    "model": {"name": "2dtan", "num_clips": 16, "hidden_dim": 32, "prop": "pool", "map_kernel": 3, "map_layers": 2,
              "loss": {"min_iou": 0.5, "max_iou": 1.0},
              "text": {"encoder": "lstm", "word_vectors": "learned", "embed_dim": 32, "hidden_dim": 64,
                       "num_layers": 1}},  # no GloVe: synthetic sentences, learned word embeddings
    "train": {"epochs": 40, "batch_size": 16, "lr": 0.005, "optimizer": "adam", "schedule": "cosine",
              "warmup_epochs": 1, "clip_grad_norm": 10.0},
    "eval": {"nms": 0.5, "top_k": 5, "recall": [1, 5], "iou": [0.3, 0.5, 0.7], "interval": 10},
}
FEATURES = {"backbone": "handcrafted", "window": 8, "stride": 4}


@dataclass
class DemoSettings:
    out: Path = Path("tal-demo")
    num_videos: int = 64
    epochs_scale: float = 1.0  # multiplies both heads' epochs (the test uses a small value)
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    threads: int = 1  # torch CPU threads: the demo's heads are small, one thread is fastest (and safe on a busy machine)


@dataclass
class DemoResult:
    detection: dict = field(default_factory=dict)
    grounding: dict = field(default_factory=dict)
    detection_chance: dict = field(default_factory=dict)
    grounding_chance: dict = field(default_factory=dict)
    queries: list = field(default_factory=list)
    images: list = field(default_factory=list)
    report: Path | None = None
    seconds: dict = field(default_factory=dict)


def _say(message: str) -> None:
    print(f"[tal demo] {message}", file=sys.stderr, flush=True)


def run_demo(settings: DemoSettings) -> DemoResult:
    """Run every step into `settings.out`; returns the metrics, baselines and written files.

    Torch runs on `settings.threads` threads meanwhile; the caller's thread count is restored after.
    """
    import torch

    threads = torch.get_num_threads()
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    try:
        return _run_steps(settings)
    finally:
        torch.set_num_threads(threads)


def _run_steps(settings: DemoSettings) -> DemoResult:
    from tal.datasets.synthetic_video import make_video_set

    if settings.num_videos < 6:
        raise TalInputError(f"--videos {settings.num_videos}: the demo needs at least 6 videos")
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult()
    clock = time.perf_counter()

    _say(f"1/5 rendering {settings.num_videos} synthetic videos into {out / 'videos'}")
    video_set = _cached_video_set(out / "videos", settings, make_video_set)
    result.seconds["render"] = time.perf_counter() - clock

    clock = time.perf_counter()
    features = out / "features.h5"
    _say(f"2/5 extracting handcrafted features into {features}")
    _extract(video_set.videos, features, settings)
    result.seconds["features"] = time.perf_counter() - clock

    clock = time.perf_counter()
    _say("3/5 training A2Net (detection)")
    det_cfg = _config(DETECTION_CONFIG, settings, features=str(features), annotations=str(video_set.annotations))
    result.detection = _train(det_cfg, out / "detection", settings)
    result.seconds["detection"] = time.perf_counter() - clock

    clock = time.perf_counter()
    _say("4/5 training 2D-TAN (grounding)")
    gr_cfg = _config(GROUNDING_CONFIG, settings, features=str(features), train=str(video_set.grounding["training"]),
                     test=str(video_set.grounding["validation"]))
    result.grounding = _train(gr_cfg, out / "grounding", settings)
    result.seconds["grounding"] = time.perf_counter() - clock

    clock = time.perf_counter()
    _say("5/5 chance baselines, sentence queries, pictures, report")
    result.detection_chance = detection_chance(video_set.annotations, det_cfg["eval"]["tiou"], settings.seed)
    result.grounding_chance = grounding_chance(video_set.grounding["validation"], settings.seed)
    result.queries = _sample_queries(out, features, video_set.grounding["validation"], settings)
    result.images = _pictures(out, video_set, features, settings)
    result.seconds["report"] = time.perf_counter() - clock
    result.report = write_report(out, result)
    return result


def _cached_video_set(folder: Path, settings: DemoSettings, make_video_set):
    """The rendered set, re-rendered only when missing or made with other settings."""
    from tal.datasets.synthetic_video import SyntheticVideoSet

    stamp = folder / "demo_set.json"
    wanted = {"num_videos": settings.num_videos, "seed": settings.seed}
    if stamp.is_file():
        saved = json.loads(stamp.read_text())
        videos = {k: Path(v) for k, v in saved["videos"].items()}
        if saved.get("settings") == wanted and all(p.is_file() for p in videos.values()):
            return SyntheticVideoSet(folder, videos, Path(saved["annotations"]),
                                     {k: Path(v) for k, v in saved["grounding"].items()}, saved["codec"],
                                     saved["num_instances"], saved["num_queries"], saved["video_seconds"], 0.0)
    progress = _say if settings.progress else None
    video_set = make_video_set(folder, settings.num_videos, seed=settings.seed, min_duration_s=20.0,
                               max_duration_s=40.0, progress=progress)
    stamp.write_text(json.dumps({
        "settings": wanted, "videos": {k: str(v) for k, v in video_set.videos.items()},
        "annotations": str(video_set.annotations), "grounding": {k: str(v) for k, v in video_set.grounding.items()},
        "codec": video_set.codec, "num_instances": video_set.num_instances, "num_queries": video_set.num_queries,
        "video_seconds": video_set.video_seconds}))
    return video_set


def _extract(videos: dict[str, Path], features: Path, settings: DemoSettings) -> None:
    from tal.features.extract import ExtractSettings, VideoJob, extract_features

    jobs = [VideoJob(vid, str(path)) for vid, path in sorted(videos.items())]
    extract = ExtractSettings(backbone=FEATURES["backbone"], window=FEATURES["window"], stride=FEATURES["stride"],
                              batch_size=32, workers=1, device=settings.device)
    result = extract_features(jobs, features, extract, progress=None if settings.progress else False)
    if result.num_failed:
        raise TalInputError(f"feature extraction failed for {result.num_failed} demo video(s); see "
                            f"{result.failures_path}")


def _config(base: dict, settings: DemoSettings, **dataset) -> dict:
    cfg = copy.deepcopy(base)
    cfg["seed"] = settings.seed
    cfg["dataset"].update(dataset)
    cfg["train"]["epochs"] = max(1, int(round(cfg["train"]["epochs"] * settings.epochs_scale)))
    cfg["eval"]["interval"] = min(cfg["eval"]["interval"], cfg["train"]["epochs"])
    return cfg


def _train(cfg: dict, work_dir: Path, settings: DemoSettings) -> dict:
    from tal.engine.trainer import train

    metrics_path = work_dir / "metrics.json"
    config_path = work_dir / "config.yaml"
    if metrics_path.is_file() and config_path.is_file():
        import yaml

        if yaml.safe_load(config_path.read_text()) == cfg:
            _say(f"   {work_dir} is already trained with these settings: reusing it")
            return json.loads(metrics_path.read_text())
    resume = (work_dir / "checkpoint_last.pt").is_file() and config_path.is_file()
    if resume:
        import yaml

        resume = yaml.safe_load(config_path.read_text()) == cfg
    # the demo's own folder: other settings than last time mean training again there
    return train(cfg, work_dir, device=settings.device, resume=resume, progress=settings.progress, overwrite=True)


def detection_chance(annotations: Path, tiou: list[float], seed: int, per_video: int = 50) -> dict:
    """mAP of a detector that draws segments and labels at random (the demo's chance level)."""
    from tal.datasets.activitynet import read_activitynet_json
    from tal.eval.detection import evaluate_detection
    from tal.eval.predictions import parse_segment_predictions

    truth = read_activitynet_json(annotations).subset("validation")
    rng = np.random.default_rng(seed)
    classes = truth.classes
    results = {}
    for vid, video in truth.videos.items():
        duration = float(video.duration)
        starts = rng.uniform(0, duration, per_video)
        ends = np.minimum(duration, starts + rng.uniform(1.0, 10.0, per_video))
        results[vid] = [{"label": classes[int(c)], "score": float(s), "segment": [float(a), float(b)]}
                        for a, b, c, s in zip(starts, ends, rng.integers(0, len(classes), per_video),
                                              rng.uniform(size=per_video))]
    return evaluate_detection(truth, parse_segment_predictions({"results": results}, "chance"),
                              np.asarray(tiou)).to_json()


def grounding_chance(queries_path: Path, seed: int, trials: int = 50) -> dict:
    """R@n,IoU=m of moments drawn uniformly at random (start < end within the video), mean of `trials` draws."""
    from tal.datasets.grounding import read_grounding_jsonl
    from tal.eval.grounding import evaluate_grounding

    queries = read_grounding_jsonl(queries_path)
    rng = np.random.default_rng(seed)
    durations = np.asarray([q.duration for q in queries])  # [Q]
    truth = np.asarray([q.segment for q in queries])  # [Q, 2]
    runs = []
    for _ in range(trials):
        moments = np.sort(rng.uniform(0, 1, (len(queries), 5, 2)), axis=2) * durations[:, None, None]  # [Q, 5, 2]
        runs.append(evaluate_grounding(list(moments), truth).to_json())
    return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}


def _sample_queries(out: Path, features: Path, queries_path: Path, settings: DemoSettings, count: int = 4) -> list:
    from tal.api import MomentRetriever
    from tal.datasets.grounding import read_grounding_jsonl

    retriever = MomentRetriever.from_checkpoint(out / "grounding" / "checkpoint_best.pt", features=features,
                                                device=settings.device)
    answers = []
    for q in read_grounding_jsonl(queries_path)[:count]:
        moments = retriever.query(q.video, q.query, top_k=3)
        answers.append({"video": q.video, "query": q.query, "truth": list(q.segment), "moments": moments})
        best = moments[0] if moments else None
        shown = f"{best['start']:.1f}-{best['end']:.1f} s" if best else "nothing"
        _say(f'   "{q.query}" in {q.video}: {shown} (truth {q.segment[0]:.1f}-{q.segment[1]:.1f} s)')
    return answers


def _pictures(out: Path, video_set, features: Path, settings: DemoSettings) -> list[Path]:
    """Timelines of two validation videos, PR curves, one grounding plot and one 2D-TAN score map."""
    import torch

    from tal.datasets.activitynet import read_activitynet_json
    from tal.datasets.jsonio import read_json
    from tal.eval.predictions import parse_segment_predictions, read_grounding_predictions
    from tal.viz import plot_grounding, plot_pr_curves, plot_score_map, plot_timeline

    figures = out / "figures"
    truth = read_activitynet_json(video_set.annotations).subset("validation")
    predictions = read_json(out / "detection" / "predictions.json")
    images = []
    for vid in list(truth.videos)[:2]:
        video = truth.videos[vid]
        gt = [(float(a), float(b), label) for (a, b), label in zip(video.segments, video.labels)]
        pred = [(r["segment"][0], r["segment"][1], r["label"], r["score"]) for r in predictions["results"].get(vid, [])]
        images.append(plot_timeline(figures / f"timeline_{vid}.png", float(video.duration), gt, pred,
                                    title=f"{vid}: ground truth vs A2Net", top_k=15, score_threshold=0.05,
                                    classes=truth.classes))
    images.append(plot_pr_curves(figures / "pr_curves.png", truth,
                                 parse_segment_predictions(predictions, "predictions"), tiou=0.5))
    grounding = read_grounding_predictions(out / "grounding" / "predictions.jsonl", need_segment=True)
    first = grounding[0]
    rows = [json.loads(line) for line in (out / "grounding" / "predictions.jsonl").read_text().splitlines()]
    duration = truth.videos[first.video].duration if first.video in truth.videos else None
    images.append(plot_grounding(figures / "grounding_query.png", float(duration or first.moments.max()), first.query,
                                 first.segment, [tuple(m) for m in rows[0]["moments"]], video=first.video))

    from tal.engine.trainer import load_trained
    from tal.features.cache import open_feature_cache

    task, model, _ = load_trained(out / "grounding" / "checkpoint_best.pt", settings.device)
    cache = open_feature_cache(features)
    batch = task.make_batch(model, [task.video_clips(cache.features(first.video))], [first.query],
                            [cache.meta(first.video).duration])
    with torch.no_grad():
        score_map = model.predict(batch)[0].cpu().numpy()
    images.append(plot_score_map(figures / "score_map.png", score_map, cache.meta(first.video).duration,
                                 valid_mask=model.mask.cpu().numpy(), ground_truth=first.segment,
                                 title=f'2D-TAN scores: "{first.query}"'))
    return images


def _fmt(value: float) -> str:
    return f"{100 * value:.1f}"


def write_report(out: Path, result: DemoResult) -> Path:
    """report.md: metrics beside chance, the sample queries, the pictures, the time of each step."""
    det, chance = result.detection["mAP"], result.detection_chance["mAP"]
    lines = ["# tal demo report", "",
             "Synthetic videos (coloured shapes performing 7 actions at known times), weight-free handcrafted "
             "features, A2Net for detection and 2D-TAN for grounding, trained on the CPU.", "",
             "## Detection (A2Net, validation videos)", "", "| tIoU | mAP (%) | chance (%) |", "|---|---|---|"]
    lines += [f"| {k} | {_fmt(v)} | {_fmt(chance[k])} |" for k, v in det.items()]
    grounding = {k: v for k, v in result.grounding.items() if k != "selected_on"}
    lines += ["", "## Grounding (2D-TAN, held-out queries)", ""]
    if result.grounding.get("selected_on"):
        lines += [f"The best epoch was picked on these same held-out queries ({result.grounding['selected_on']} "
                  f"split; the demo has no separate validation split), as 2D-TAN does on Charades-STA.", ""]
    lines += ["| metric | value (%) | chance (%) |", "|---|---|---|"]
    lines += [f"| {k} | {_fmt(v)} | {_fmt(result.grounding_chance[k])} |" for k, v in grounding.items()]
    lines += ["", "## Sentence queries", ""]
    for q in result.queries:
        best = q["moments"][0] if q["moments"] else None
        shown = f"{best['start']:.1f}-{best['end']:.1f} s (score {best['score']:.2f})" if best else "nothing"
        lines.append(f"- \"{q['query']}\" in `{q['video']}`: {shown}; truth {q['truth'][0]:.1f}-{q['truth'][1]:.1f} s")
    lines += ["", "## Pictures", ""]
    lines += [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in result.images]
    lines += ["", "## Time (s)", "", " | ".join(f"{k} {v:.0f}" for k, v in result.seconds.items()), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
