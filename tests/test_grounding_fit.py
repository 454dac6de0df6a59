"""Each grounding head, trained through the shared loop on tal's synthetic grounding set, beats random
moments by a wide margin on R@1,IoU=0.5 (issue 4's acceptance)."""
from __future__ import annotations

import pytest
import torch

from tal.config import load_config
from tal.datasets.synthetic import make_grounding_set
from tal.demo import grounding_chance
from tal.engine.trainer import train

# config, overrides, floor on R@1,IoU=0.5 (measured value in the comment; random moments score 0.103)
HEADS = {
    "2dtan_pool": ("configs/synthetic/2dtan.yaml", [], 0.35),  # measured 0.50
    "2dtan_conv": ("configs/synthetic/2dtan.yaml", ["model.prop=conv"], 0.3),  # measured 0.433
    "man": ("configs/synthetic/man.yaml", ["train.epochs=60"], 0.35),  # measured 0.573 (0.27 after 30 epochs)
}


@pytest.fixture(scope="module")
def grounding_set(tmp_path_factory):
    return make_grounding_set(tmp_path_factory.mktemp("grounding"), num_videos=200, seed=0)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_head_beats_random_moments(head, grounding_set, tmp_path):
    path, overrides, floor = HEADS[head]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = load_config(path, [f"dataset.features={grounding_set.features}", f"dataset.train={grounding_set.train}",
                                 f"dataset.test={grounding_set.test}", "train.epochs=30", *overrides])
        metrics = train(cfg, tmp_path / head, progress=False)
    finally:
        torch.set_num_threads(threads)
    chance = grounding_chance(grounding_set.test, seed=0)["R@1,IoU=0.5"]
    assert 0.05 < chance < 0.15  # measured 0.103 on this set (events are 8% to 60% of their video)
    assert metrics["R@1,IoU=0.5"] >= max(floor, chance + 0.15), (metrics, chance)
