"""Tasks join data, heads and evaluators: `grounding` (moment retrieval) and `detection` (actions, proposals).

A task reads the dataset section of a config (or, for inference, the `meta` a checkpoint stored), builds
its head, yields training batches, predicts, writes predictions in the contract format and scores them
exactly as `tal evaluate` would. The training loop (`tal.engine.trainer`) knows only this interface.
"""
from tal.tasks import detection, grounding  # noqa: F401  (registers "detection", "grounding")
from tal.tasks.base import build_task, task_name

__all__ = ["build_task", "task_name"]
