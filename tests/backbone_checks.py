"""Shared steps of the per-backbone tests: random weights saved in a published layout, extraction of sample
videos through the CLI, and the cache's features and timing read back."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from tal.cli.main import main
from tal.features.cache import feature_times, open_feature_cache
from tal.features.decode import probe_video, resample_indices, window_starts

REPO = Path(__file__).resolve().parents[1]
LABELS = {"bigbuckbunny": ("bunny", [1.0, 4.0]), "bikes": ("ride", [2.0, 7.0]),
          "carphone_distorted": ("talk", [0.5, 3.0]), "carphone_pristine": ("talk", [1.0, 3.5])}
SENTENCES = {"bigbuckbunny": "a rabbit wakes up", "bikes": "people ride bikes down the road",
             "carphone_distorted": "a man talks on the phone", "carphone_pristine": "the man talks in a car"}
TINY = {"fps": 1.0, "window": 2, "stride": 2}  # few, short clips: the CPU runs these networks at full size


def save_state(state: dict[str, torch.Tensor], path: Path, drop_counters: bool = False) -> Path:
    """torch.save a state dict; drop_counters: without BatchNorm's num_batches_tracked, as files saved
    before PyTorch 0.4 (the I3D port's) are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v for k, v in state.items() if not (drop_counters and k.endswith("num_batches_tracked"))}, path)
    return path


def seeded_state(builder, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in builder().state_dict().items()}


def extract(videos: list[Path], out: Path, backbone: str, weights: str, settings: dict = TINY) -> dict:
    """Run `tal extract-features`; {video id: features [T, D]} plus the file attributes under "attrs"."""
    cmd = ["extract-features", *map(str, videos), "--out", str(out), "--backbone", backbone, "--weights", weights,
           "--workers", "0", "--no-progress"]
    for key, value in settings.items():
        cmd += [f"--{key}", str(value)]
    assert main(cmd) == 0
    with open_feature_cache(out) as cache:
        result = {vid: cache.features(vid) for vid in cache.videos}
        result["attrs"] = dict(cache.attrs)
        result["meta"] = {vid: cache.meta(vid) for vid in cache.videos}
    return result


def check_timing(extracted: dict, videos: list[Path], settings: dict, dim: int) -> None:
    """Each video has one feature per full window at the settings' rate, centred at (i*stride + window/2)/fps."""
    for video in videos:
        info = probe_video(video)
        frames = len(resample_indices(info.num_frames, info.fps, settings["fps"]))
        starts = window_starts(frames, settings["window"], settings["stride"])
        features, meta = extracted[video.stem], extracted["meta"][video.stem]
        assert features.shape == (len(starts), dim) and np.isfinite(features).all()
        assert (meta.fps, meta.window, meta.stride) == (settings["fps"], settings["window"], settings["stride"])
        np.testing.assert_allclose(feature_times(meta), (starts + settings["window"] / 2) / settings["fps"])


def assert_differ(a: np.ndarray, b: np.ndarray) -> None:
    """Features of other weights: not zero, and apart by more than a tenth of their scale (random deep nets
    give tiny activations, so an absolute bound would say nothing)."""
    scale = max(np.abs(a).max(), np.abs(b).max())
    assert scale > 0 and np.abs(a - b).max() > 0.1 * scale


def write_annotations(cache: Path, out: Path) -> tuple[Path, Path]:
    """ActivityNet JSON (one 'training' subset, also scored: a smoke-size run) and grounding JSONL, with the
    cache's durations."""
    with open_feature_cache(cache) as c:
        durations = {vid: c.meta(vid).duration for vid in c.videos}
    database = {vid: {"subset": "training", "duration": durations[vid],
                      "annotations": [{"segment": LABELS[vid][1], "label": LABELS[vid][0]}]} for vid in durations}
    detection = out / "actions.json"
    detection.write_text(json.dumps({"database": database}))
    grounding = out / "queries.jsonl"
    grounding.write_text("".join(json.dumps({"video": vid, "duration": durations[vid], "query": SENTENCES[vid],
                                             "segment": LABELS[vid][1]}) + "\n" for vid in durations))
    return detection, grounding


def train_head(kind: str, features: Path, detection: Path, grounding: Path, work: Path,
               extra: tuple[str, ...] = (), head: str = "2dtan") -> Path:
    if kind == "detection":
        overrides = [f"dataset.features={features}", f"dataset.annotations={detection}",
                     "dataset.val_subset=training", "dataset.num_steps=64", "train.epochs=2", "train.batch_size=2",
                     "eval.interval=1", "model.base_dim=32", "model.pyramid_dims=[32,32,32]", "model.head_dim=32"]
        config = REPO / "configs/synthetic/a2net.yaml"
    else:
        overrides = [f"dataset.features={features}", f"dataset.train={grounding}", f"dataset.test={grounding}",
                     "train.epochs=2", "train.batch_size=4", "eval.interval=1"]
        config = REPO / f"configs/synthetic/{head}.yaml"
    assert main(["train", str(config), "--work-dir", str(work), "--no-progress", "--set", *overrides, *extra]) == 0
    return work / "checkpoint_best.pt"
