"""Inference from Python: `MomentRetriever` (sentence -> moments) and `ActionDetector` (video -> actions).

Both load a checkpoint written by `tal train`; it records the head, its config, the class list or the
vocabulary, and the feature settings the head was trained on. A video is given either as an id in a
feature cache, or as a path to a video file: then its features are extracted with the recorded settings
(backbone, weights, fps, window, stride) into a cache (`cache=` path, or a temporary one), so asking
again is instant. A cache made with other settings is refused: its features would not mean what the
head learned.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from tal.errors import TalInputError
from tal.features.cache import FeatureCache, open_feature_cache

SETTING_KEYS = ("backbone", "fps", "window", "stride", "feature_dim")


def check_feature_settings(trained: dict, cache: FeatureCache, checkpoint: str | Path) -> None:
    """Refuse a cache whose backbone / weights / timing / dimension differ from what the head was trained on."""
    from tal.features.weights import describe, same_weights
    from tal.tasks.grounding import feature_settings

    have = feature_settings(cache) if cache.videos else {**cache.attrs, "feature_dim": cache.feature_dim}
    differ = []
    native = "native" in (trained.get("extract_fps"), have.get("extract_fps"))  # each video at its own rate
    for key in SETTING_KEYS:
        if key == "fps" and native:
            continue
        want, got = trained.get(key), have.get(key)
        if want is None or got is None:
            continue
        same = abs(float(want) - float(got)) < 1e-6 if isinstance(want, (int, float)) and isinstance(
            got, (int, float)) else str(want) == str(got)
        if not same:
            differ.append(f"{key} {got!r} (trained with {want!r})")
    if same_weights(trained, have) is False:
        differ.append(f"weights {describe(have)} (trained with {describe(trained)})")
    if differ:
        raise TalInputError(f"{cache.path}: features were made with other settings than {checkpoint} was trained "
                            f"on: {'; '.join(differ)}. Extract them again with those settings (tal extract-features "
                            f"--backbone {trained.get('backbone')} --fps {trained.get('fps')} --window "
                            f"{trained.get('window')} --stride {trained.get('stride')}), or leave this cache out: "
                            f"video files given without it are extracted with the recorded settings")


class _Predictor:
    """Checkpoint + features, shared by the two public classes."""

    task_name = ""

    def __init__(self, checkpoint: str | Path, features: str | Path | None = None, device: str = "cpu",
                 cache: str | Path | None = None, weights: str | None = None, progress: bool | None = None):
        from tal.engine.trainer import load_trained
        from tal.tasks.base import task_name

        self.checkpoint = Path(checkpoint)
        self.device = torch.device(device)
        self.task, self.model, state = load_trained(checkpoint, device)
        if task_name(state["config"]) != self.task_name:
            raise TalInputError(f"{checkpoint}: a {task_name(state['config'])} checkpoint; "
                                f"{type(self).__name__} needs a {self.task_name} one")
        self.settings: dict = dict(state["meta"].get("features") or {})
        self.weights = weights
        self.progress = progress
        self.features = open_feature_cache(features) if features is not None else None
        if self.features is not None:
            check_feature_settings(self.settings, self.features, checkpoint)
        self._cache_path = Path(cache) if cache is not None else None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._extracted: FeatureCache | None = None
        self._added: dict[str, FeatureCache] = {}  # video id -> a cache given to add_features
        self._clip_cache: dict[str, tuple[torch.Tensor, float]] = {}

    def videos(self) -> list[str]:
        """Video ids of the feature cache given at load time, then those of `add_features`."""
        return (list(self.features.videos) if self.features is not None else []) + list(self._added)

    def duration_of(self, video: str | Path) -> float:
        """Duration (s) of a cached id or video file, as the feature cache records it (a cached id's
        features are not read)."""
        for cache in (self.features, self._added.get(str(video))):
            if cache is not None and str(video) in cache:
                return float(cache.meta(str(video)).duration)
        return float(self._features_of(video)[1].duration)

    def can_extract(self) -> bool:
        """Whether video files can be answered: the checkpoint's features came from a tal backbone."""
        backbone = self.settings.get("backbone")
        return bool(backbone) and not str(backbone).startswith("synthetic")

    def extract_settings(self) -> Any:
        """The `ExtractSettings` that reproduce the features the head was trained on (one process)."""
        from tal.features.extract import ExtractSettings
        from tal.features.weights import inference_weights

        if not self.can_extract():
            raise TalInputError(f"{self.checkpoint} was trained on features with no extractor "
                                f"({self.settings.get('backbone')!r}); give a feature cache instead of a video file")
        fps = self.settings.get("extract_fps", self.settings.get("fps"))
        return ExtractSettings(backbone=str(self.settings["backbone"]),
                               weights=inference_weights(self.settings, self.weights, self.checkpoint),
                               fps=None if fps in (None, "native") else float(fps),
                               window=self.settings.get("window"), stride=self.settings.get("stride"),
                               workers=0, device=str(self.device))

    def add_features(self, path: str | Path) -> list[str]:
        """Make the videos of another feature cache answerable by id (e.g. an uploaded video's); returns
        their ids. The cache must hold features made with the recorded settings; known ids are refused."""
        cache = open_feature_cache(path)
        check_feature_settings(self.settings, cache, self.checkpoint)
        taken = sorted(set(cache.videos) & set(self.videos()))
        if taken:
            cache.close()
            raise TalInputError(f"{path}: video id(s) {', '.join(map(repr, taken[:3]))} are already answered for")
        for vid in cache.videos:
            self._added[vid] = cache
        return list(cache.videos)

    def _features_of(self, video: str | Path) -> tuple[Any, Any]:
        """(features [T, D], FeatureMeta) of a cached id, or of a video file (extracted on first use, again
        when the file changed: also when its path is an id in the cache, which extracted files get)."""
        path = Path(video)
        extracted_here = path.is_file() and str(video) == _video_key(path)  # an id tal gave an extracted file
        if self.features is not None and str(video) in self.features and not extracted_here:
            vid = str(video)
            return self.features.features(vid), self.features.meta(vid)
        if path.is_file():
            cache = self._extract(path)
            vid = _video_key(path)
            return cache.features(vid), cache.meta(vid)
        if str(video) in self._added:
            cache = self._added[str(video)]
            return cache.features(str(video)), cache.meta(str(video))
        if self.features is None:
            raise TalInputError(f"{video}: no such video file")
        known = ", ".join(self.videos()[:3])
        raise TalInputError(f"unknown video {str(video)!r}: not a video id of {self.features.path}"
                            f"{' (e.g. ' + known + ')' if known else ''}, nor a video file")

    def _extract(self, path: Path) -> FeatureCache:
        from dataclasses import replace

        from tal.features.extract import VideoJob, extract_features, source_changed

        settings = replace(self.extract_settings(), overwrite=True)  # a changed file is extracted again
        vid = _video_key(path)
        if self._extracted is not None and vid in self._extracted and not source_changed(
                self._extracted.source(vid), str(path)):
            return self._extracted
        if self._cache_path is None:
            self._tmp = self._tmp or tempfile.TemporaryDirectory(prefix="tal-features-")
            out = Path(self._tmp.name) / "features.h5"
        else:
            out = self._cache_path
        result = extract_features([VideoJob(vid, str(path))], out, settings, progress=self.progress)
        if result.failures:
            raise TalInputError(f"{path}: feature extraction failed: {result.failures[0]['reason']}")
        if self._extracted is not None:
            self._extracted.close()
        self._extracted = open_feature_cache(out)
        check_feature_settings(self.settings, self._extracted, self.checkpoint)
        return self._extracted


def _video_key(path: Path) -> str:
    return str(path.resolve())


class Moments(list):
    """A query's ranked moments [{"start", "end", "score"}], plus `warnings`: what the caller should know
    about the answer (e.g. a sentence of words the text encoder never learned)."""

    def __init__(self, moments: list[dict[str, float]], warnings: list[str] | None = None):
        super().__init__(moments)
        self.warnings: list[str] = list(warnings or [])


class MomentRetriever(_Predictor):
    """Moment retrieval with a trained grounding head (2D-TAN, MAN).

    Example:
        >>> r = MomentRetriever.from_checkpoint("runs/x/checkpoint_best.pt", features="feats.h5")
        >>> r.query("video_0001", "a person opens the door", top_k=5)
        [{"start": 3.1, "end": 9.4, "score": 0.83}, ...]
    """

    task_name = "grounding"

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, features: str | Path | None = None, device: str = "cpu",
                        cache: str | Path | None = None, weights: str | None = None,
                        progress: bool | None = None) -> "MomentRetriever":
        """Load a checkpoint written by `tal train`. features = a feature cache of the videos to answer by id
        (checked against the settings the head was trained on); device = where the head runs; cache = where the
        features of video files given later are kept (default: a temporary file); weights = the backbone weights
        file when a video file is given and the recorded one is elsewhere; progress = the extraction bar (None:
        on when stderr is a terminal)."""
        return cls(checkpoint, features, device, cache, weights, progress)

    def query(self, video: str | Path, sentence: str, top_k: int = 5) -> Moments:
        """Ranked moments [{"start", "end", "score"}] in seconds, best first, for a sentence (a list with
        `.warnings`). A score ranks the moments of one video for one sentence; it is not a probability that
        the sentence happens there, and scores of different sentences or videos are not comparable."""
        (result,) = self.query_batch([(video, sentence, top_k)])
        if isinstance(result, Exception):
            raise result
        return result

    def query_batch(self, requests: list[tuple[str | Path, str, int]]) -> list[Moments | Exception]:
        """Answer several (video, sentence, top_k) at once, in one forward pass; a bad request gets its
        TalInputError in its place and does not affect the others."""
        results: list = [None] * len(requests)
        good = []
        for i, (video, sentence, top_k) in enumerate(requests):
            try:
                if not isinstance(sentence, str) or not sentence.strip():
                    raise TalInputError("the query sentence is empty")
                if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
                    raise TalInputError(f"top_k must be a positive integer, got {top_k!r}")
                clips, duration_s = self._video_clips(video)
                if not self.task.tokenize(sentence):  # the batch would refuse it: fail this request alone
                    raise TalInputError(f"query {sentence!r} has no words")
                good.append((i, clips, duration_s, sentence.strip(), top_k))
            except TalInputError as exc:
                results[i] = exc
        if good:
            from tal.tasks.base import to_device

            batch = self.task.make_batch(self.model, [g[1] for g in good], [g[3] for g in good], [g[2] for g in good])
            ranked = self.task.rank_moments(self.model, to_device(batch, self.device), max(g[4] for g in good))
            for (i, _, _, sentence, top_k), moments in zip(good, ranked):  # greedy NMS: the first k kept are the top k
                results[i] = Moments([{"start": float(a), "end": float(b), "score": float(c)}
                                      for a, b, c in moments[:top_k]], self.sentence_warnings(sentence))
        return results

    def sentence_warnings(self, sentence: str) -> list[str]:
        """Warnings for an answer: a sentence none of whose words the text encoder knows is out of domain
        (subword encoders such as MiniLM know every sentence)."""
        coverage = getattr(self.model.text, "word_coverage", None)
        words, unknown = coverage(sentence) if coverage is not None else ([], [])
        if words and len(unknown) == len(words):
            return [f"none of the words of {sentence!r} were seen in training ({', '.join(unknown[:5])}): "
                    f"the moments are ranked without the sentence's meaning"]
        return []

    def _video_clips(self, video: str | Path) -> tuple[torch.Tensor, float]:
        """The head's input for a video and its duration, computed once per video (the last 1024 are kept)."""
        key = str(video)
        if Path(video).is_file():  # a changed file is a new key: its features are extracted again
            stat = Path(video).stat()
            key = f"{_video_key(Path(video))}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in self._clip_cache:
            features, meta = self._features_of(video)
            if len(self._clip_cache) >= 1024:
                self._clip_cache.pop(next(iter(self._clip_cache)))
            self._clip_cache[key] = (self.task.video_clips(features), float(meta.duration))
        return self._clip_cache[key]


class ActionDetector(_Predictor):
    """Action detection (or proposals) with a trained detection head (A2Net, S3D, TCN, BSN++, S-2D-TAN).

    Example:
        >>> d = ActionDetector.from_checkpoint("runs/thumos/checkpoint_best.pt")
        >>> d.detect("my_video.mp4")
        [{"label": "jump", "score": 0.91, "start": 12.3, "end": 15.0}, ...]
    """

    task_name = "detection"

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, features: str | Path | None = None, device: str = "cpu",
                        cache: str | Path | None = None, weights: str | None = None,
                        progress: bool | None = None) -> "ActionDetector":
        """See `MomentRetriever.from_checkpoint`."""
        return cls(checkpoint, features, device, cache, weights, progress)

    @property
    def classes(self) -> list[str]:
        return list(self.task.classes)

    def detect(self, video: str | Path, score_threshold: float = 0.0, top_k: int | None = None) -> list[dict]:
        """Detections [{"label", "score", "start", "end"}] in seconds, best first (label None for proposals)."""
        from tal.tasks.detection import Timing

        features, meta = self._features_of(video)
        segments, scores, labels = self.task.detect_video(self.model, features, Timing.of(meta), self.device)
        proposals = self.task.is_proposal_head(self.model)
        out = [{"label": None if proposals else self.task.classes[int(c)], "score": float(s),
                "start": float(a), "end": float(b)}
               for (a, b), s, c in zip(segments, scores, labels) if b > a and s >= score_threshold]
        return out[:top_k] if top_k else out


def load_predictor(checkpoint: str | Path, features: str | Path | None = None, device: str = "cpu",
                   weights: str | None = None) -> MomentRetriever | ActionDetector:
    """The MomentRetriever or ActionDetector that a checkpoint's task calls for (`tal serve` takes either)."""
    from tal.engine.checkpoint import load_checkpoint
    from tal.tasks.base import task_name

    kind = MomentRetriever if task_name(load_checkpoint(checkpoint)["config"]) == "grounding" else ActionDetector
    return kind.from_checkpoint(checkpoint, features=features, device=device, weights=weights)
