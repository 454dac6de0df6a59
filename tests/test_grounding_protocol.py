"""2D-TAN's evaluation and selection protocol end to end: one NMS, R@5 on five moments, the LR plateau
on -(val loss), and which split picks the best epoch."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tal.config import load_config
from tal.datasets.synthetic import make_grounding_set
from tal.engine.optim import Plateau
from tal.engine.checkpoint import load_checkpoint
from tal.engine.trainer import load_trained, train
from tal.errors import TalInputError
from tal.eval.grounding import evaluate_grounding
from tal.models.man import decode_candidates
from tal.models.tan2d import decode_moments, sparse_map_mask
from tal.ops.ranked_nms import ranked_nms
from tal.tasks import build_task

from test_configs_grounding import CONFIGS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N = 16
DURATION_S = 30.96  # the first Charades-STA test video
# Cells (start clip, end clip) ranked best first. A = [0, 2] and B = [0, 4] clips overlap by exactly 0.5 in
# clip units, but by 0.5 + 1.1e-16 in float64 seconds at this duration, so B is suppressed at NMS 0.5 there;
# C..F are disjoint from each other and from A. The ground truth is F, the sixth candidate.
RANKED_CELLS = [(0, 1), (0, 3), (4, 5), (6, 7), (8, 9), (10, 11)]


def ranked_map() -> torch.Tensor:
    scores = torch.zeros(1, N, N)
    for rank, (i, j) in enumerate(RANKED_CELLS):
        scores[0, i, j] = 0.9 - 0.1 * rank
    return scores


def grounding_task(nms: float = 0.5):
    cfg = {"task": "grounding", "model": {"name": "2dtan", "num_clips": N},
           "eval": {"nms": nms, "top_k": 5, "recall": [1, 5], "iou": [0.5]}}
    return build_task(cfg, meta={"input_dim": 4, "vocab": ["<pad>", "<unk>"]})


def as_rows(moments: list[list[tuple]], truth_s: list[float]) -> list[dict]:
    return [{"video": "v", "query": "q", "segment": truth_s, "moments": [list(m) for m in ranked]}
            for ranked in moments]


def test_r_at_5_is_scored_on_five_moments_when_five_survive_nms():
    """Before: the decoder kept A..E (clip units), the evaluator's second NMS (seconds) dropped B and had
    nothing to put in its place, so R@5 saw 4 moments and missed F. One NMS keeps A, C, D, E, F."""
    truth_s = [10 * DURATION_S / N, 12 * DURATION_S / N]
    moments = decode_moments(ranked_map(), [DURATION_S], nms_threshold=0.5, top_k=5)
    assert len(moments[0]) == 5
    metrics = grounding_task().evaluate(as_rows(moments, truth_s), "test")
    assert metrics["R@1,IoU=0.5"] == 0.0 and metrics["R@5,IoU=0.5"] == 1.0


def test_man_decoder_runs_the_same_single_nms():
    candidates = sparse_map_mask(N).nonzero().double() + torch.tensor([0.0, 1.0])  # [136, 2] clips
    scores = ranked_map()[:, candidates[:, 0].long(), candidates[:, 1].long() - 1]  # [1, 136]
    truth_s = [10 * DURATION_S / N, 12 * DURATION_S / N]
    moments = decode_candidates(scores, candidates, [DURATION_S], N, nms_threshold=0.5, top_k=5)
    starts = [round(m[0] * N / DURATION_S) for m in moments[0]]
    assert starts == [0, 4, 6, 8, 10]  # B suppressed, F in its place
    metrics = grounding_task().evaluate(as_rows(moments, truth_s), "test")
    assert metrics["R@5,IoU=0.5"] == 1.0


def test_nms_follows_2dtans_rule_at_the_threshold_and_above_one():
    # overlap = inter / (len_i + len_j - inter): [0, 2] vs [1, 3] = 1 / 3, kept at 1/3 exactly (<=), dropped below
    pair = torch.tensor([[[0.0, 2.0], [1.0, 3.0]]])
    assert ranked_nms(pair, None, 1 / 3, None).tolist() == [[0, 1]]
    assert ranked_nms(pair, None, 0.33, None).tolist() == [[0, -1]]
    # two zero-length moments have overlap 0 / 0: 2D-TAN drops the second even at threshold 1 (NaN <= 1 is False)
    moments = [np.array([[5.0, 5.0], [5.0, 5.0], [1.0, 3.0]])]
    truth = np.array([[1.0, 3.0]])
    at_one = evaluate_grounding(moments, truth, recalls=(2,), ious=(0.5,), nms_threshold=1.0)
    no_nms = evaluate_grounding(moments, truth, recalls=(2,), ious=(0.5,), nms_threshold=None)
    assert at_one.recall[0, 0] == 1.0 and no_nms.recall[0, 0] == 0.0


def test_val_loss_plateau_is_torchs_reduce_lr_on_plateau_fed_the_negated_loss():
    """2D-TAN: scheduler = ReduceLROnPlateau(opt, factor, patience); scheduler.step(-val_loss)."""
    losses = [1.0, 0.9, 0.95, 1.2, 1.19995, 1.1, 1.0, 0.8, 1.3, 1.3, 0.5, 0.4]
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    official = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
    plateau = Plateau(factor=0.5, patience=1, watch="val_loss")
    for loss in losses:
        official.step(-loss)
        plateau.update(Plateau.watched_value("val_loss", metric=0.0, val_loss=loss))
        assert plateau.scale == optimizer.param_groups[0]["lr"]
    # by hand: -loss must fall below 0.9999 x its lowest value so far; it misses at losses 0.9, 0.95 (LR / 2),
    # 1.1, 1.0 (LR / 2), 0.5, 0.4 (LR / 2): the LR falls whenever the val loss falls (the sign quirk), and a
    # repeated 1.3 counts as a new best (-1.3 < -1.3 x 0.9999)
    assert plateau.scale == 0.125


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    return make_grounding_set(tmp_path_factory.mktemp("grounding"), num_videos=12, feature_dim=16, seed=3, val=True)


def synthetic_cfg(tiny_set, *extra: str) -> dict:
    overrides = [f"dataset.features={tiny_set.features}", f"dataset.train={tiny_set.train}",
                 f"dataset.test={tiny_set.test}", "train.epochs=2", "eval.interval=1", "model.hidden_dim=8",
                 "model.text.hidden_dim=8", *extra]
    return load_config(CONFIGS / "synthetic" / "2dtan.yaml", overrides)


def test_without_val_the_test_selection_is_said_in_the_log_and_metrics_json(tiny_set, tmp_path):
    metrics = train(synthetic_cfg(tiny_set), tmp_path, progress=False)
    assert metrics["selected_on"] == "test"
    assert json.loads((tmp_path / "metrics.json").read_text())["selected_on"] == "test"
    log = (tmp_path / "train.log").read_text()
    assert "no validation split, so the best epoch" in log and "NO GloVe" in log
    assert "(best epoch picked on test)" in log.splitlines()[-1]


def test_with_val_the_best_epoch_is_picked_on_val_and_the_val_loss_drives_the_plateau(tiny_set, tmp_path):
    cfg = synthetic_cfg(tiny_set, f"+dataset.val={tiny_set.val}", "train.schedule=plateau",
                        "+train.plateau_watch=val_loss", "+train.plateau_patience=0")
    metrics = train(cfg, tmp_path, progress=False)
    assert "selected_on" not in metrics
    best = load_checkpoint(tmp_path / "checkpoint_best.pt")
    assert all(np.isfinite(h["val_loss"]) for h in best["history"])
    task, model, _ = load_trained(tmp_path / "checkpoint_best.pt", cfg=cfg, with_data=True)
    on_val = task.evaluate(task.predict(model, "val", torch.device("cpu")), "val")
    assert best["history"][best["epoch"] - 1]["val"] == on_val  # the metric that picked the epoch is val's


def test_the_plateau_never_reads_the_test_split(tiny_set, tmp_path):
    for watch in ("val_loss", "metric"):
        cfg = synthetic_cfg(tiny_set, "train.schedule=plateau", f"+train.plateau_watch={watch}")
        with pytest.raises(TalInputError, match="train.schedule=plateau steps on the validation split"):
            train(cfg, tmp_path / watch, progress=False)
