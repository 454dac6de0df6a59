"""Choosing the ground-truth subset an evaluation runs on, with errors that list what exists."""
from __future__ import annotations

from pathlib import Path

from tal.datasets.activitynet import read_activitynet_json
from tal.datasets.types import DetectionAnnotations
from tal.errors import TalInputError


def select_subset(annotations: DetectionAnnotations, subset: str | None) -> DetectionAnnotations:
    """The videos of `subset`. None means the only subset of the file; with several it is an error,
    because evaluating train and test together silently lowers every number."""
    names = annotations.subsets()
    where = annotations.source or "ground truth"
    if subset is None:
        if len(names) > 1:
            raise TalInputError(f"{where}: has subsets {', '.join(map(repr, names))}; choose one with --subset")
        subset = names[0] if names else None
    elif subset not in names:
        raise TalInputError(f"{where}: no subset {subset!r}; the subsets are {', '.join(map(repr, names)) or 'none'}")
    selected = annotations.subset(subset)
    if selected.num_instances == 0:
        raise TalInputError(f"{where}: subset {subset!r} has no annotated segments, nothing to evaluate against")
    return selected


def load_subset(path: str | Path, subset: str | None) -> DetectionAnnotations:
    """Read an ActivityNet-format ground-truth file and keep one subset (see `select_subset`)."""
    return select_subset(read_activitynet_json(path), subset)
