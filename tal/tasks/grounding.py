"""Moment retrieval: sentence queries over cached features -> ranked moments, scored by R@n,IoU=m.

dataset keys: `features` (HDF5 cache), `train`, `test` and optional `val` (grounding JSONL or a native
format, `format` auto-detected), `normalize` (L2-normalise each raw feature before averaging, as 2D-TAN
does; default true), `strip_prefix`. The clip count comes from the model (num_clips x frame_stride);
the feature dimension from the cache (model.input_dim is filled in, or checked when given).
eval keys: `nms` (threshold of the NMS over ranked moments, default 0.5), `top_k` (moments written per
query, default 5), `recall` ([1, 5]), `iou` ([0.3, 0.5, 0.7]), `iou_ge`, `batch_size`, `metric`, `interval`.
"""
from __future__ import annotations

from contextlib import closing
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tal.config import check_number
from tal.datasets.annotations import load_grounding_queries
from tal.datasets.types import GroundingQuery
from tal.errors import TalInputError
from tal.eval.grounding import evaluate_grounding
from tal.features.cache import FeatureCache, open_feature_cache
from tal.models.layers import average_to_num_clips
from tal.models.text import LEARNED, Vocabulary, get_tokenizer
from tal.models.word_vectors import GLOVE_HINT
from tal.registry import MODELS, TASKS
from tal.tasks.base import Task, check_section, require_files

DATASET_KEYS = {"features", "train", "test", "val", "format", "normalize", "strip_prefix"}
EVAL_KEYS = {"nms", "top_k", "recall", "iou", "iou_ge", "batch_size", "metric", "interval"}
FEATURE_ATTRS = ("backbone", "weights", "weights_sha256", "weights_path", "fps", "window", "stride", "feature_dim",
                 "input_size", "frame_size")


def feature_settings(cache: FeatureCache) -> dict:
    """How a cache was made (its file attributes plus the first video's timing), for checkpoints."""
    settings = {k: cache.attrs[k] for k in FEATURE_ATTRS if k in cache.attrs}
    if "fps" in cache.attrs:
        settings["extract_fps"] = cache.attrs["fps"]  # as extraction was asked: a number or "native"
    if cache.videos:
        meta = cache.meta(cache.videos[0])
        settings.update(fps=meta.fps, stride=meta.stride, window=meta.window)
    settings["feature_dim"] = cache.feature_dim
    return settings


def warn_duration_mismatch(path, queries: list[GroundingQuery], cache: FeatureCache, tolerance: float = 0.1) -> None:
    """Warn (stderr) when annotated durations differ from the cache's by more than `tolerance` (relative) and
    1 s: the annotations then place every moment at the wrong features. The worst videos are named."""
    import sys

    worst: dict[str, tuple[float, float]] = {}
    for q in queries:
        if q.video not in worst:
            have = float(cache.meta(q.video).duration)
            if abs(q.duration - have) > max(1.0, tolerance * have):
                worst[q.video] = (q.duration, have)
    if worst:
        named = sorted(worst.items(), key=lambda kv: -abs(kv[1][0] - kv[1][1]))[:3]
        shown = ", ".join(f"{vid} {a:g} s vs {c:g} s" for vid, (a, c) in named)
        print(f"tal: warning: {path}: {len(worst)} video(s) have annotated durations unlike the feature cache's "
              f"{cache.path} (annotation vs cache: {shown}); check that both describe the same videos and "
              f"frame rate", file=sys.stderr)


@TASKS.register("grounding")
class GroundingTask(Task):
    """See the module docstring. Items are queries; a video's clip features are computed once."""

    predictions_name = "predictions.jsonl"
    default_metric = "R@1,IoU=0.5"

    def __init__(self, cfg: dict, meta: dict | None = None):
        super().__init__(cfg, meta)
        self.data = check_section(cfg, "dataset", DATASET_KEYS, "grounding")
        self.eval_cfg = check_section(cfg, "eval", EVAL_KEYS, "grounding")
        self.model_cfg = dict(cfg.get("model") or {})
        if self.model_cfg.get("name") not in ("2dtan", "man"):
            raise TalInputError(f"model {self.model_cfg.get('name')!r} is not a grounding head (2dtan, man)")
        self.text_cfg = dict(self.model_cfg.get("text") or {})
        if "tokenizer" not in self.text_cfg:  # checkpoints from before tokenizers had names used tal's
            legacy = meta is not None and meta.get("vocab") is not None and "tokenizer" not in meta
            self.text_cfg["tokenizer"] = "words" if legacy else "split"
        self.model_cfg["text"] = self.text_cfg
        self.tokenize = get_tokenizer(self.text_cfg["tokenizer"])
        self.normalize = bool(self.data.get("normalize", True))
        self.num_steps = check_number(self.model_cfg, "num_clips", "model", 16, int, 1) * check_number(
            self.model_cfg, "frame_stride", "model", 1, int, 1)
        self._clips: dict[str, torch.Tensor] = {}
        self._sentence_vectors: dict[str, torch.Tensor] = {}
        self.splits: dict[str, list[GroundingQuery]] = {}
        self.cache: FeatureCache | None = None
        if meta is None:
            self._check_text_input()
            self._load_data()

    def _check_text_input(self) -> None:
        """An LSTM reads GloVe unless learned embeddings are asked for by name (2D-TAN always reads GloVe)."""
        if self.text_cfg.get("encoder", "lstm") == "lstm" and not self.text_cfg.get("word_vectors"):
            raise TalInputError(f"model.text.word_vectors is not set: 2D-TAN reads frozen GloVe 6B 300-d vectors; "
                                f"{GLOVE_HINT}")

    def text_input(self) -> str:
        """What the sentence encoder reads, in words, for the log."""
        text = self.text_cfg
        if text.get("encoder", "lstm") != "lstm":
            return f"text: {text.get('encoder')} sentence vectors"
        tokenizer = f"tokenizer {text.get('tokenizer', 'split')}"
        if text.get("word_vectors") in (None, LEARNED):
            return f"text: learned word embeddings, NO GloVe (model.text.word_vectors=learned); {tokenizer}"
        vocabulary = text.get("vocabulary", "glove")
        scope = "every GloVe word" if vocabulary == "glove" else "the training words' GloVe rows"
        return f"text: frozen GloVe vectors from {text['word_vectors']} ({scope}); {tokenizer}"

    # ------------------------------------------------------------------ data
    def _load_data(self) -> None:
        for key in ("features", "train", "test"):
            if not self.data.get(key):
                raise TalInputError(f"dataset.{key} is not set: grounding needs dataset.features=H5 "
                                    f"dataset.train=JSONL dataset.test=JSONL (optional dataset.val)")
        require_files(self.data, ("features", "train", "val", "test"),
                      "dataset.features=FEATS.h5 dataset.train=TRAIN.jsonl dataset.test=TEST.jsonl")
        self.cache = open_feature_cache(self.data["features"])
        for split in ("train", "val", "test"):
            if self.data.get(split):
                self.splits[split] = self._load_split(split)
        dim = self.cache.feature_dim
        given = self.model_cfg.get("input_dim")
        if given is not None and int(given) != dim:
            raise TalInputError(f"model.input_dim={given} but {self.cache.path} holds {dim}-d features; "
                                f"drop model.input_dim (it is read from the cache) or use matching features")
        self.model_cfg["input_dim"] = dim
        self.meta = {"features": feature_settings(self.cache), "input_dim": dim, "num_steps": self.num_steps,
                     "tokenizer": self.text_cfg["tokenizer"]}
        text = self.text_cfg
        reads_table = text.get("word_vectors") not in (None, LEARNED) and text.get("vocabulary", "glove") == "glove"
        if text.get("encoder", "lstm") == "lstm" and not text.get("vocab") and not reads_table:
            sentences = [q.query for q in self.splits["train"]]
            vocab = Vocabulary.from_sentences(sentences, min_count=int(text.get("min_count", 1)),
                                              tokenizer=text.get("tokenizer", "split"))
            self.meta["vocab"] = vocab.tokens

    def _load_split(self, split: str) -> list[GroundingQuery]:
        path = self.data[split]
        queries = load_grounding_queries(path, self.data.get("format", "auto"),
                                         strip_prefix=self.data.get("strip_prefix"))
        if not queries:
            raise TalInputError(f"{path}: no queries in dataset.{split}")
        missing = sorted({q.video for q in queries if q.video not in self.cache})
        if missing:
            raise TalInputError(f"{path}: {len(missing)} video(s) of dataset.{split} have no features in "
                                f"{self.cache.path} (e.g. {', '.join(missing[:3])}); extract or import them, or "
                                f"point dataset.features at the right cache")
        warn_duration_mismatch(path, queries, self.cache)
        return [GroundingQuery(q.video, q.duration, q.query,
                               (max(0.0, q.segment[0]), min(q.duration, q.segment[1]))) for q in queries]

    def video_clips(self, features: np.ndarray) -> torch.Tensor:
        """A video's raw features [T, D] -> the head's input [num_clips * frame_stride, D] float32."""
        x = torch.as_tensor(features, dtype=torch.float32)
        if self.normalize:
            x = torch.nn.functional.normalize(x, dim=1)
        return average_to_num_clips(x, self.num_steps)

    def _clips_of(self, video: str) -> torch.Tensor:
        if video not in self._clips:  # setdefault: with prefetch threads, every batch holds the same tensor
            self._clips.setdefault(video, self.video_clips(self.cache.features(video)))
        return self._clips[video]

    # ------------------------------------------------------------------ model and batches
    def build_model(self) -> nn.Module:
        cfg = dict(self.model_cfg)
        cfg.setdefault("input_dim", self.meta.get("input_dim"))
        vocab = Vocabulary(self.meta["vocab"]) if self.meta.get("vocab") else None
        return MODELS.get(cfg["name"])(cfg, vocab=vocab)

    def num_train_items(self) -> int:
        return len(self.splits["train"])

    def text_inputs(self, model: nn.Module, sentences: list[str]) -> dict[str, torch.Tensor]:
        """The text part of a batch; sentence-encoder vectors (MiniLM) are computed once per sentence."""
        text = getattr(model, "text", None)
        if text is None or not hasattr(text, "encode"):
            return model.prepare_text(sentences)
        todo = [s for s in dict.fromkeys(sentences) if s not in self._sentence_vectors]
        if todo:
            self._sentence_vectors.update(zip(todo, text.encode(todo)))
        return {"sentence_vectors": torch.stack([self._sentence_vectors[s] for s in sentences])}

    def make_batch(self, model: nn.Module, clips: list[torch.Tensor], sentences: list[str], durations_s: list[float],
                   segments_s: list[tuple[float, float]] | None = None) -> dict:
        """A batch in the grounding heads' contract (tal.models.tan2d / tal.models.man)."""
        for sentence in sentences:
            if not self.tokenize(sentence):
                raise TalInputError(f"query {sentence!r} has no words")
        batch = self.text_inputs(model, sentences)
        unique = list({id(c): c for c in clips}.values())  # queries about one video share its clips tensor
        row = {id(c): i for i, c in enumerate(unique)}
        batch["features"] = torch.stack(unique)  # [V, ...]: the head runs each video once
        batch["video_index"] = torch.tensor([row[id(c)] for c in clips], dtype=torch.long)  # [B]
        batch["duration"] = torch.tensor(durations_s, dtype=torch.float64)
        if segments_s is not None:
            batch["segment"] = torch.tensor(segments_s, dtype=torch.float64)
        return batch

    def train_batch(self, model: nn.Module, indices: list[int]) -> dict:
        queries = [self.splits["train"][i] for i in indices]
        return self.make_batch(model, [self._clips_of(q.video) for q in queries], [q.query for q in queries],
                               [q.duration for q in queries], [q.segment for q in queries])

    # ------------------------------------------------------------------ inference and scoring
    def rank_moments(self, model: nn.Module, batch: dict, top_k: int | None = None) -> list[list[tuple]]:
        """Per query: (start_s, end_s, score) after the head's NMS, best first."""
        scores = model.predict(batch)
        top_k = int(self.eval_cfg.get("top_k", 5)) if top_k is None else top_k
        return model.decode(scores, batch["duration"], float(self.eval_cfg.get("nms", 0.5)), top_k)

    def split_queries(self, split: str) -> list[GroundingQuery]:
        if split == "val" and "val" not in self.splits:
            split = "test"
        if split not in self.splits:
            raise TalInputError(f"dataset.{split} is not set")
        return self.splits[split]

    def eval_batches(self, model: nn.Module, split: str, device: torch.device, with_segments: bool = False):
        """(queries, batch on `device`) for the split in batches of eval.batch_size, the model in eval mode."""
        from tal.tasks.base import to_device

        model.eval()
        queries = self.split_queries(split)
        size = int(self.eval_cfg.get("batch_size", 32))

        def build(chunk: list[GroundingQuery]) -> tuple[list[GroundingQuery], dict]:
            return chunk, self.make_batch(model, [self._clips_of(q.video) for q in chunk], [q.query for q in chunk],
                                          [q.duration for q in chunk],
                                          [q.segment for q in chunk] if with_segments else None)

        chunks = (queries[start:start + size] for start in range(0, len(queries), size))
        with closing(self.prefetch.map(build, chunks)) as built:
            for chunk, batch in built:
                yield chunk, to_device(batch, device)

    @torch.no_grad()
    def validation_loss(self, model: nn.Module, split: str, device: torch.device) -> float:
        """Mean over batches of eval.batch_size of the loss in eval mode, as 2D-TAN's val loss."""
        losses = [float(model(batch)["loss"]) for _, batch in self.eval_batches(model, split, device, True)]
        return float(np.mean(losses))

    @torch.no_grad()
    def predict(self, model: nn.Module, split: str, device: torch.device) -> list[dict]:
        rows = []
        for chunk, batch in self.eval_batches(model, split, device):
            for q, moments in zip(chunk, self.rank_moments(model, batch)):
                rows.append({"video": q.video, "query": q.query, "segment": list(q.segment),
                             "moments": [[float(s), float(e), float(c)] for s, e, c in moments]})
        return rows

    def evaluate(self, predictions: list[dict], split: str) -> dict:
        moments = [np.asarray([m[:2] for m in row["moments"]], dtype=np.float64).reshape(-1, 2) for row in predictions]
        truth = np.asarray([row["segment"] for row in predictions], dtype=np.float64)
        result = evaluate_grounding(moments, truth, recalls=self.eval_cfg.get("recall", (1, 5)),
                                    ious=self.eval_cfg.get("iou", (0.3, 0.5, 0.7)),
                                    nms_threshold=None,  # the decoder ran the one NMS (rank_moments)
                                    iou_ge=bool(self.eval_cfg.get("iou_ge", False)))
        return result.to_json()

    def write_predictions(self, predictions: list[dict], path: str | Path) -> None:
        from tal.datasets.jsonio import write_jsonl_atomic

        write_jsonl_atomic(predictions, path)

    @property
    def eval_split(self) -> str:
        return "test"

    @property
    def val_split(self) -> str:
        return "val" if "val" in self.splits else "test"

    @property
    def selected_on_test(self) -> bool:
        return "val" not in self.splits and not self.data.get("val")

    @property
    def concurrent_batches(self) -> bool:  # type: ignore[override]
        """A frozen sentence encoder (MiniLM, CLIP) encodes each new sentence with the others of its first
        batch, and its vectors can differ in the last bit with that company: one builder thread keeps the
        order of num_workers=0."""
        return self.text_cfg.get("encoder", "lstm") == "lstm"

    def describe(self) -> str:
        counts = ", ".join(f"{len(v)} {k}" for k, v in self.splits.items())
        return (f"grounding: {counts} queries; {self.meta.get('input_dim')}-d features -> {self.num_steps} clips; "
                f"{self.text_input()}")
