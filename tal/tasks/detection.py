"""Action detection and proposals: ActivityNet-format annotations + cached features -> scored segments.

Heads work in feature steps (feature i spans [i, i + 1)); this task converts with DESIGN.md's time
rule, step x <-> t = ((x - 0.5) * stride + window / 2) / fps seconds, clipped to [0, duration].
Two ways to feed a video (`dataset.mode`):
- "window" (THUMOS14 style): windows of `num_steps` features, consecutive training windows overlapping
  by `window_overlap` and inference windows by `test_window_overlap` (default: the same); training
  uses the windows that hold at least one instance with `min_coverage` of its length inside
  (instances are clipped to the window); at inference every window is predicted, the detections
  shifted back, merged per video and passed through the head's NMS once.
- "rescale" (ActivityNet style): each video's features linearly resampled to `num_steps` steps.
Class-agnostic heads (`proposal_head`) write proposals; with `dataset.classification` (an ActivityNet
classification submission, `{"results": {vid: [{"label", "score"}]}}`) each proposal is also paired with
the video's `classes_per_proposal` best classes (score = proposal x class score) into detections.

dataset keys: features, annotations, format, train_subset, val_subset, mode, num_steps, window_overlap,
test_window_overlap, min_coverage, strip_prefix, classification, classes_per_proposal, class_agnostic
(train any detection head on one "action" class and treat its detections as proposals, labelled from
dataset.classification as the proposal heads are: the official A2Net ActivityNet protocol), also_emit
({class: other class}: every detection of `class` is also emitted as `other class` before the video's
NMS; the official A2Net THUMOS14 code does this for CliffDiving -> Diving, lib/core/post_process.py,
CATE_IDX_OCC / CATE_IDX_REP).
eval keys: tiou (detection thresholds, "A:B:STEP" or a list; default 0.5:0.95:0.05), max_detections
(per video, 200), batch_size, metric, interval, nms_per_window (default false: with several windows the
head's NMS runs once, on the merged detections of the video, as the official A2Net and BMN THUMOS14
codes do; true also runs it in every window first, which decays soft-NMS scores twice), max_avg_proposals
(100), proposal_ar_at (the ANs of AR@AN, default 1, 5, 10, 50, 100; THUMOS14: 50 .. 1000 with
max_avg_proposals 1000), proposal_tiou (default 0.5:0.95:0.05).
"""
from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tal.datasets.annotations import load_detection_annotations
from tal.datasets.types import DetectionAnnotations
from tal.errors import TalInputError
from tal.eval.detection import ACTIVITYNET_TIOU, evaluate_detection
from tal.eval.predictions import parse_segment_predictions
from tal.eval.proposals import AR_AT, evaluate_proposals
from tal.features.cache import FeatureCache, FeatureMeta, open_feature_cache
from tal.ops.nms import postprocess_detections
from tal.registry import MODELS, TASKS
from tal.tasks.base import Prefetcher, Task, check_section, require_files, to_device
from tal.tasks.grounding import feature_settings

DATASET_KEYS = {"features", "annotations", "format", "train_subset", "val_subset", "mode", "num_steps",
                "window_overlap", "test_window_overlap", "min_coverage", "strip_prefix", "classification",
                "classes_per_proposal", "also_emit", "class_agnostic"}
EVAL_KEYS = {"tiou", "max_detections", "batch_size", "metric", "interval", "nms_per_window", "max_avg_proposals",
             "proposal_ar_at", "proposal_tiou"}
MODES = ("window", "rescale")
PROPOSAL_HEADS = {"bsnpp", "s2dtan"}  # their modules set `proposal_head = True`


@dataclass(frozen=True)
class Timing:
    """A video's feature timing: enough to turn feature steps into seconds."""

    fps: float
    stride: int
    window: int
    duration: float
    num_features: int

    @classmethod
    def of(cls, meta: FeatureMeta, duration: float | None = None) -> "Timing":
        return cls(meta.fps, meta.stride, meta.window, float(duration or meta.duration), meta.num_features)

    def to_seconds(self, steps: np.ndarray) -> np.ndarray:
        seconds = ((np.asarray(steps, dtype=np.float64) - 0.5) * self.stride + self.window / 2) / self.fps
        return seconds.clip(0.0, self.duration)

    def to_steps(self, seconds: np.ndarray) -> np.ndarray:
        return (np.asarray(seconds, dtype=np.float64) * self.fps - self.window / 2) / self.stride + 0.5


@dataclass(frozen=True)
class Chunk:
    """A head input cut from a video: features [num_steps, D] and how its steps map to the video's."""

    video: str
    offset: float  # video step of chunk step 0
    scale: float  # video steps per chunk step
    num_valid: int


def parse_tiou(value) -> np.ndarray:
    """eval.tiou: "A:B:STEP" or a list of thresholds."""
    if value is None:
        return ACTIVITYNET_TIOU
    if isinstance(value, str) and ":" in value:
        start, stop, step = (float(x) for x in value.split(":"))
        return np.linspace(start, stop, int(round((stop - start) / step)) + 1)  # as `tal evaluate --tiou` does
    values = np.asarray(value if isinstance(value, (list, tuple)) else [value], dtype=np.float64)
    if values.size == 0 or (values <= 0).any() or (values > 1).any():
        raise TalInputError(f"eval.tiou must be thresholds in (0, 1], got {value!r}")
    return values


def window_starts(num_features: int, num_steps: int, overlap: float) -> list[int]:
    """Start steps of the windows covering a video (the last one ends at the video's end)."""
    if num_features <= num_steps:
        return [0]
    step = max(1, int(round(num_steps * (1.0 - overlap))))
    starts = list(range(0, num_features - num_steps + 1, step))
    if starts[-1] + num_steps < num_features:
        starts.append(num_features - num_steps)
    return starts


def resample_features(features: torch.Tensor, num_steps: int) -> torch.Tensor:
    """[T, D] -> [num_steps, D] by linear interpolation between feature centres."""
    return F.interpolate(features.t()[None], size=num_steps, mode="linear", align_corners=False)[0].t().contiguous()


@TASKS.register("detection")
class DetectionTask(Task):
    """See the module docstring."""

    predictions_name = "predictions.json"

    def __init__(self, cfg: dict, meta: dict | None = None):
        super().__init__(cfg, meta)
        self.data = check_section(cfg, "dataset", DATASET_KEYS, "detection")
        self.eval_cfg = check_section(cfg, "eval", EVAL_KEYS, "detection")
        self.model_cfg = dict(cfg.get("model") or {})
        self.mode = str(self.data.get("mode", "window"))
        if self.mode not in MODES:
            raise TalInputError(f"dataset.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        self.num_steps = int(self.data.get("num_steps", 128))
        self.overlap = float(self.data.get("window_overlap", 0.25))
        self.test_overlap = float(self.data.get("test_window_overlap", self.overlap))
        if self.num_steps < 2 or not (0.0 <= self.overlap < 1.0 and 0.0 <= self.test_overlap < 1.0):
            raise TalInputError(f"dataset.num_steps must be >= 2 and dataset.window_overlap, test_window_overlap in "
                                f"[0, 1), got {self.num_steps}, {self.overlap} and {self.test_overlap}")
        self.min_coverage = float(self.data.get("min_coverage", 0.5))
        self.tiou = parse_tiou(self.eval_cfg.get("tiou"))
        self.cache: FeatureCache | None = None
        self.annotations: DetectionAnnotations | None = None
        self.train_items: list[tuple[Chunk, np.ndarray, np.ndarray]] = []
        self._features: dict[str, torch.Tensor] = {}
        if meta is None:
            self._load_data()
        self.classes: list[str] = list(self.meta["classes"])
        self.also_emit = self._also_emit_pairs(self.data.get("also_emit") or {})
        self.class_agnostic = bool(self.data.get("class_agnostic", False))

    def _also_emit_pairs(self, mapping: dict) -> torch.Tensor:
        """dataset.also_emit as class-index pairs [M, 2] (from, to)."""
        if not isinstance(mapping, dict):
            raise TalInputError(f"dataset.also_emit must map a class to another, e.g. {{CliffDiving: Diving}}, "
                                f"got {mapping!r}")
        unknown = sorted(str(c) for pair in mapping.items() for c in pair if c not in self.classes)
        if unknown:
            raise TalInputError(f"dataset.also_emit names {', '.join(unknown)}, not classes of the training subset "
                                f"({', '.join(self.classes[:5])}, ...); fix the class names or drop dataset.also_emit")
        index = {c: i for i, c in enumerate(self.classes)}
        return torch.tensor([[index[a], index[b]] for a, b in mapping.items()], dtype=torch.long).reshape(-1, 2)

    def emit_also(self, segments: torch.Tensor, scores: torch.Tensor,
                  labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Append a copy of every detection of a `from` class of dataset.also_emit, labelled `to`."""
        copies = [(labels == a).nonzero()[:, 0] for a, _ in self.also_emit.tolist()]
        targets = [torch.full((len(c),), b, dtype=labels.dtype) for c, (_, b) in zip(copies, self.also_emit.tolist())]
        if not copies:
            return segments, scores, labels
        rows = torch.cat(copies)
        return (torch.cat([segments, segments[rows]]), torch.cat([scores, scores[rows]]),
                torch.cat([labels, torch.cat(targets)]))

    # ------------------------------------------------------------------ data
    def _load_data(self) -> None:
        for key in ("features", "annotations", "train_subset", "val_subset"):
            if not self.data.get(key):
                raise TalInputError(f"dataset.{key} is not set: detection needs dataset.features=H5 "
                                    f"dataset.annotations=JSON dataset.train_subset=S dataset.val_subset=S")
        require_files(self.data, ("features", "annotations", "classification"),
                      "dataset.features=FEATS.h5 dataset.annotations=GT.json dataset.train_subset=S dataset.val_subset=S")
        self.cache = open_feature_cache(self.data["features"])
        self.annotations = load_detection_annotations(self.data["annotations"], self.data.get("format", "auto"),
                                                      strip_prefix=self.data.get("strip_prefix"))
        train = self._subset(self.data["train_subset"])
        self._subset(self.data["val_subset"])
        classes = sorted({label for a in train.videos.values() for label in a.labels})
        if not classes:
            raise TalInputError(f"{self.annotations.source}: subset {self.data['train_subset']!r} has no instances")
        dim = self.cache.feature_dim
        given = self.model_cfg.get("input_dim")
        if given is not None and int(given) != dim:
            raise TalInputError(f"model.input_dim={given} but {self.cache.path} holds {dim}-d features; drop "
                                f"model.input_dim (it is read from the cache)")
        self.meta = {"features": feature_settings(self.cache), "input_dim": dim, "classes": classes,
                     "mode": self.mode, "num_steps": self.num_steps}
        self.classes = classes
        self.train_items = self._training_chunks(train)
        if not self.train_items:
            raise TalInputError(f"no training window holds an instance (dataset.num_steps={self.num_steps}, "
                                f"min_coverage={self.min_coverage}); check the annotations' times against the features")

    def _subset(self, name: str) -> DetectionAnnotations:
        subset = self.annotations.subset(name)
        if not subset.videos:
            raise TalInputError(f"{self.annotations.source}: no video in subset {name!r}; subsets present: "
                                f"{', '.join(self.annotations.subsets())}")
        missing = sorted(v for v in subset.videos if v not in self.cache)
        if missing:
            raise TalInputError(f"{self.cache.path}: {len(missing)} video(s) of subset {name!r} have no features "
                                f"(e.g. {', '.join(missing[:3])}); extract or import them, or fix dataset.features")
        return subset

    def _training_chunks(self, train: DetectionAnnotations) -> list[tuple[Chunk, np.ndarray, np.ndarray]]:
        index = {c: i for i, c in enumerate(self.classes)}
        items = []
        for vid, annotation in train.videos.items():
            timing = Timing.of(self.cache.meta(vid), annotation.duration)
            segments = timing.to_steps(annotation.segments.reshape(-1, 2))  # [N, 2] video steps
            labels = np.array([index[label] for label in annotation.labels], dtype=np.int64)
            for chunk in self.chunks(vid, timing.num_features, training=True):
                local = (segments - chunk.offset) / chunk.scale  # [N, 2] chunk steps
                clipped = local.clip(0.0, chunk.num_valid)
                length = np.maximum(local[:, 1] - local[:, 0], 1e-9)
                keep = (clipped[:, 1] - clipped[:, 0]) / length >= self.min_coverage
                if keep.any():
                    items.append((chunk, clipped[keep].astype(np.float32), labels[keep]))
        return items

    def chunks(self, video: str, num_features: int, training: bool = False) -> list[Chunk]:
        """The head inputs of a video, in the configured mode (training or inference window overlap)."""
        if self.mode == "rescale":
            return [Chunk(video, 0.0, num_features / self.num_steps, self.num_steps)]
        overlap = self.overlap if training else self.test_overlap
        return [Chunk(video, float(start), 1.0, min(self.num_steps, num_features - start))
                for start in window_starts(num_features, self.num_steps, overlap)]

    def chunk_features(self, chunk: Chunk, features: torch.Tensor) -> torch.Tensor:
        """[num_valid, D] of the chunk (rescaled, or a window of the video)."""
        if self.mode == "rescale":
            return resample_features(features, self.num_steps)
        start = int(chunk.offset)
        return features[start:start + chunk.num_valid]

    def _video_features(self, video: str) -> torch.Tensor:
        if video not in self._features:  # setdefault: prefetch threads may read a video at once
            self._features.setdefault(video, torch.from_numpy(self.cache.features(video)))
        return self._features[video]

    # ------------------------------------------------------------------ model and batches
    def build_model(self) -> nn.Module:
        cfg = dict(self.model_cfg)
        cfg["input_dim"] = self.meta["input_dim"]
        if cfg.get("name") not in PROPOSAL_HEADS:  # class-agnostic heads take no class count
            cfg["num_classes"] = 1 if self.class_agnostic else len(self.meta["classes"])
        return MODELS.get(cfg.get("name"))(cfg)

    def num_train_items(self) -> int:
        return len(self.train_items)

    def pad_batch(self, inputs: list[torch.Tensor]) -> dict:
        """features [B, num_steps, D] zero-padded, mask [B, num_steps]."""
        dim = inputs[0].shape[1]
        features = torch.zeros(len(inputs), self.num_steps, dim)
        mask = torch.zeros(len(inputs), self.num_steps, dtype=torch.bool)
        for b, x in enumerate(inputs):
            features[b, :len(x)] = x
            mask[b, :len(x)] = True
        return {"features": features, "mask": mask}

    def train_batch(self, model: nn.Module, indices: list[int]) -> dict:
        items = [self.train_items[i] for i in indices]
        batch = self.pad_batch([self.chunk_features(c, self._video_features(c.video)) for c, _, _ in items])
        batch["segments"] = [torch.from_numpy(s) for _, s, _ in items]
        batch["labels"] = [torch.from_numpy(labels * 0 if self.class_agnostic else labels) for _, _, labels in items]
        return batch

    # ------------------------------------------------------------------ inference
    def is_proposal_head(self, model: nn.Module) -> bool:
        return bool(getattr(model, "proposal_head", False)) or self.class_agnostic

    @torch.no_grad()
    def detect_video(self, model: nn.Module, features: np.ndarray | torch.Tensor, timing: Timing,
                     device: torch.device, video_scores: torch.Tensor | None = None,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One video's detections: segments [K, 2] seconds, scores [K], class indices [K] (0 for proposals).

        video_scores [C]: the video's class scores from dataset.classification, given to the head as
        batch["video_scores"] [B, C] (TCN adds them to its proposal classifier, as its official code).
        """
        model.eval()
        features = torch.as_tensor(features, dtype=torch.float32)
        chunks = self.chunks("", len(features))
        size = int(self.eval_cfg.get("batch_size", 16))
        head_nms = getattr(model, "nms", None)
        raw_windows = len(chunks) > 1 and head_nms is not None and not self.eval_cfg.get("nms_per_window", False)
        if raw_windows:
            model.nms = {"method": "none"}  # the windows' candidates are NMSed once, merged, below
        try:
            segments, scores, labels = self._predict_chunks(model, chunks, features, size, device, video_scores)
        finally:
            if raw_windows:
                model.nms = head_nms
        max_detections = int(self.eval_cfg.get("max_detections", 200))
        emitted = len(self.also_emit) > 0 and not self.is_proposal_head(model)
        if emitted:
            segments, scores, labels = self.emit_also(segments, scores, labels)
        if (len(chunks) > 1 or emitted) and len(scores):
            nms = dict(head_nms or {"method": "hard", "iou_threshold": 0.5})
            nms["max_detections"] = max_detections
            segments, scores, labels = postprocess_detections(segments, scores, labels, **nms)
        order = scores.argsort(descending=True, stable=True)[:max_detections]
        seconds = timing.to_seconds(segments[order].numpy())
        return seconds, scores[order].numpy(), labels[order].numpy()

    def _predict_chunks(self, model: nn.Module, chunks: list[Chunk], features: torch.Tensor, size: int,
                        device: torch.device, video_scores: torch.Tensor | None,
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The head's predictions of every chunk, in video steps: segments [N, 2], scores [N], labels [N]."""
        segments, scores, labels = [], [], []
        for start in range(0, len(chunks), size):
            part = chunks[start:start + size]
            batch = self.pad_batch([self.chunk_features(c, features) for c in part])
            if video_scores is not None:
                batch["video_scores"] = video_scores.expand(len(part), -1)
            batch = to_device(batch, device)
            for chunk, (seg, score, label) in zip(part, model.predict(batch)):
                segments.append(seg.double().cpu() * chunk.scale + chunk.offset)
                scores.append(score.double().cpu())
                labels.append(label.long().cpu())
        return torch.cat(segments), torch.cat(scores), torch.cat(labels)

    def video_items(self, split: str) -> list[tuple[str, Timing]]:
        subset = self.annotations.subset(self.data["val_subset"] if split in ("val", "test") else split)
        return [(vid, Timing.of(self.cache.meta(vid), a.duration)) for vid, a in subset.videos.items()]

    def predict(self, model: nn.Module, split: str, device: torch.device) -> dict:
        proposals = self.is_proposal_head(model)
        priors = self.video_class_scores() if not proposals and self.data.get("classification") else {}
        results = {}
        items = self.video_items(split)
        reader = Prefetcher(self.prefetch.num_workers)  # the features are cut into windows: nothing to pin
        with closing(reader.map(self._video_features, [vid for vid, _ in items])) as features:
            for (vid, timing), video_features in zip(items, features):
                segments, scores, labels = self.detect_video(model, video_features, timing, device, priors.get(vid))
                results[vid] = detection_rows(self, segments, scores, labels, proposals)
        out = {"version": "tal", "results": results, "external_data": {}}
        if proposals and self.data.get("classification"):
            out["detections"] = fuse_video_classes(results, read_classification(self.data["classification"]),
                                                   int(self.data.get("classes_per_proposal", 2)))
        return out

    def video_class_scores(self) -> dict[str, torch.Tensor]:
        """dataset.classification as vid -> [C] scores in this task's class order (0 for a class not listed)."""
        index = {c: i for i, c in enumerate(self.classes)}
        out = {}
        for vid, pairs in read_classification(self.data["classification"]).items():
            scores = torch.zeros(len(self.classes))
            for label, score in pairs:
                if label in index:
                    scores[index[label]] = score
            out[vid] = scores
        return out

    def evaluate(self, predictions: dict, split: str) -> dict:
        truth = self.annotations.subset(self.data["val_subset"])
        if "detections" in predictions or any("label" in r for rows in predictions["results"].values() for r in rows):
            data = {"results": predictions.get("detections", predictions["results"])}
            parsed = parse_segment_predictions(data, "predictions", with_labels=True)
            metrics = evaluate_detection(truth, parsed, self.tiou).to_json()
            if "detections" not in predictions:
                return metrics
        else:
            metrics = {}
        parsed = parse_segment_predictions({"results": predictions["results"]}, "predictions", with_labels=False)
        proposal_tiou = parse_tiou(self.eval_cfg.get("proposal_tiou"))
        ar_at = tuple(int(n) for n in self.eval_cfg.get("proposal_ar_at", AR_AT))
        result = evaluate_proposals(truth, parsed, float(self.eval_cfg.get("max_avg_proposals", 100)), proposal_tiou,
                                    ar_at)
        return {**result.to_json(), **metrics}

    def write_predictions(self, predictions: dict, path: str | Path) -> None:
        from tal.datasets.jsonio import write_json_atomic

        path = Path(path)
        out = {k: v for k, v in predictions.items() if k != "detections"}
        write_json_atomic(out, path, indent=None)
        if "detections" in predictions:
            write_json_atomic({**out, "results": predictions["detections"]},
                              path.with_name(path.stem + "_detections.json"), indent=None)

    @property
    def default_metric(self) -> str:  # type: ignore[override]
        proposal = self.model_cfg.get("name") in PROPOSAL_HEADS or bool(self.data.get("class_agnostic"))
        return "AR@100" if proposal and not self.data.get("classification") else "average_mAP"

    @property
    def eval_split(self) -> str:
        return "val"

    @property
    def val_split(self) -> str:
        return "val"

    def describe(self) -> str:
        return (f"detection: {len(self.train_items)} training {self.mode} inputs of {self.num_steps} steps, "
                f"{len(self.classes)} classes, {self.meta.get('input_dim')}-d features")


def read_classification(path: str | Path) -> dict[str, list[tuple[str, float]]]:
    """Video-level class scores from an ActivityNet classification submission: vid -> [(label, score)], best first."""
    from tal.datasets.jsonio import read_json

    data = read_json(path)
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, dict):
        raise TalInputError(f"{path}: not a classification file (expected {{'results': {{vid: [{{label, score}}]}}}})")
    out = {}
    for vid, rows in results.items():
        try:
            pairs = [(str(r["label"]), float(r["score"])) for r in rows]
        except (KeyError, TypeError, ValueError):
            raise TalInputError(f"{path}: video {vid!r}: each entry needs a 'label' and a numeric 'score'") from None
        out[vid] = sorted(pairs, key=lambda p: -p[1])
    return out


def fuse_video_classes(proposals: dict[str, list[dict]], classes: dict[str, list[tuple[str, float]]],
                       top_k: int) -> dict[str, list[dict]]:
    """Detections from class-agnostic proposals: each proposal x each of its video's top_k classes."""
    missing = [vid for vid in proposals if vid not in classes]
    if missing:
        raise TalInputError(f"dataset.classification has no scores for {len(missing)} video(s) "
                            f"(e.g. {', '.join(missing[:3])})")
    return {vid: [{"label": label, "score": p["score"] * score, "segment": p["segment"]}
                  for p in rows for label, score in classes[vid][:top_k]]
            for vid, rows in proposals.items()}


def detection_rows(task: DetectionTask, segments: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                   proposals: bool) -> list[dict]:
    """Contract rows [{label, score, segment}] (label omitted for proposals)."""
    return [{"score": float(s), "segment": [float(a), float(b)]} if proposals else
            {"label": task.classes[int(c)], "score": float(s), "segment": [float(a), float(b)]}
            for (a, b), s, c in zip(segments, scores, labels) if b > a]
