"""In-memory annotation records shared by loaders, datasets and evaluators.

Times are seconds. Segments are float64 arrays of shape [N, 2] (start, end).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class VideoAnnotation:
    """One video of a detection / proposal set (the ActivityNet `database` entry)."""

    video: str
    subset: str
    duration: float | None
    segments: np.ndarray  # [N, 2] seconds
    labels: list[str]
    extra: dict = field(default_factory=dict)  # e.g. fps, num_frames; kept through conversion


@dataclass
class DetectionAnnotations:
    """A detection / proposal annotation set: videos by id, and the class list."""

    videos: dict[str, VideoAnnotation]
    classes: list[str]
    source: str = ""  # the file it came from, for error messages

    def subset(self, name: str | None) -> "DetectionAnnotations":
        """The videos of one subset (None: all). Class list is kept, so label indices stay stable."""
        if name is None:
            return self
        videos = {v: a for v, a in self.videos.items() if a.subset == name}
        return DetectionAnnotations(videos, self.classes, self.source)

    def subsets(self) -> list[str]:
        return sorted({a.subset for a in self.videos.values()})

    @property
    def num_instances(self) -> int:
        return sum(len(a.labels) for a in self.videos.values())


@dataclass
class GroundingQuery:
    """One sentence query of a moment-retrieval set."""

    video: str
    duration: float
    query: str
    segment: tuple[float, float]  # seconds


@dataclass
class LoadReport:
    """What a loader of a native format left out or changed, counted by reason.

    Loaders fill one when they are given it; `tal convert-annotations` prints it as its summary.
    """

    dropped: dict[str, int] = field(default_factory=dict)  # reason -> number of items left out
    changed: dict[str, int] = field(default_factory=dict)  # reason -> number of items kept but altered

    def drop(self, reason: str, count: int = 1) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(count)

    def change(self, reason: str, count: int = 1) -> None:
        if count:
            self.changed[reason] = self.changed.get(reason, 0) + int(count)

    def describe(self) -> str:
        """'dropped 4 <items, why>; 1802 <items changed, how>', or 'nothing dropped or changed'."""
        parts = [f"dropped {n} {why}" for why, n in self.dropped.items()]
        parts += [f"{n} {why}" for why, n in self.changed.items()]
        return "; ".join(parts) if parts else "nothing dropped or changed"
