"""Segments annotated with several labels (THUMOS14: every CliffDiving instance is also a Diving one,
Diving listed first): every label gets positives, on hand-made ground truth and on the real file."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tal.config import load_config
from tal.datasets.synthetic import make_detection_features
from tal.models.a2net import assign_points, pad_ground_truth
from tal.models.anchors import anchor_centres_widths, anchor_segments, match_segments
from tal.models.targets import class_targets, label_distributions
from tal.tasks.detection import DetectionTask

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_label_distributions_and_targets_by_hand():
    gt = torch.tensor([[[0.0, 4.0], [0.0, 4.0], [5.0, 9.0], [0.0, 0.0]]])
    labels = torch.tensor([[1, 3, 2, 0]])
    valid = torch.tensor([[True, True, True, False]])
    dist = label_distributions(gt, labels, valid, num_classes=4)  # [1, 4, 5], column 0 = background
    assert dist[0].tolist() == [[0, 0, 0.5, 0, 0.5], [0, 0, 0.5, 0, 0.5], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]]
    targets = class_targets(dist, torch.tensor([[1, 2, 0]]), torch.tensor([[True, True, False]]))
    assert targets[0].tolist() == [[0, 0, 0.5, 0, 0.5], [0, 0, 0, 1, 0], [1, 0, 0, 0, 0]]


def test_thumos14_every_class_gets_positives_in_a2net(shared_data, tmp_path):
    made = make_detection_features(shared_data / "thumos14/thumos14_actionformer.json", tmp_path)
    cfg = load_config(CONFIGS / "thumos14/a2net.yaml", [
        f"dataset.features={made.features}", f"dataset.annotations={made.annotations}",
        "+model.base_dim=8", "+model.pyramid_dims=[8,8,8,8,8,8]", "+model.head_dim=8"])
    task = DetectionTask(cfg)
    model = task.build_model()
    cliff = task.classes.index("CliffDiving")
    segments, labels, valid = pad_ground_truth([torch.from_numpy(s) for _, s, _ in task.train_items],
                                               [torch.from_numpy(c) for _, _, c in task.train_items], "cpu")
    dist = label_distributions(segments, labels, valid, len(task.classes))
    lengths = model.level_lengths(task.num_steps)

    anchors = anchor_segments(lengths, model.strides, model.anchor_ratios)  # [A, 2]
    _, index, positive = match_segments(anchors.expand(len(segments), -1, -1), segments, valid, 0.5)
    ab = class_targets(dist, index, positive).sum(dim=(0, 1))  # [C + 1] positive mass per class
    points, _, level = anchor_centres_widths(lengths, model.strides, [1.0])
    classes, _, point_gt = assign_points(points, level, model.af_ranges, segments, labels, valid)
    af = class_targets(dist, point_gt, classes > 0).sum(dim=(0, 1))

    assert (ab[1:] > 0).all() and (af[1:] > 0).all(), (ab, af)
    # the annotation-order rule every official matcher uses leaves CliffDiving without a positive
    assert not (labels.gather(1, index)[positive] == cliff).any()
    assert not (classes == cliff + 1).any()


def test_also_emit_copies_detections_to_the_other_class():
    classes = ["CliffDiving", "Diving", "Shotput"]
    cfg = {"task": "detection", "dataset": {"mode": "window", "num_steps": 16, "also_emit": {"CliffDiving": "Diving"}},
           "model": {"name": "a2net"}}
    task = DetectionTask(cfg, meta={"input_dim": 4, "classes": classes, "mode": "window", "num_steps": 16})
    segments = torch.tensor([[0.0, 2.0], [3.0, 5.0], [6.0, 9.0]])
    out_segments, out_scores, out_labels = task.emit_also(segments, torch.tensor([0.9, 0.8, 0.7]),
                                                          torch.tensor([0, 2, 0]))
    assert out_labels.tolist() == [0, 2, 0, 1, 1]
    assert out_scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.9, 0.7])
    assert out_segments[3:].tolist() == [[0.0, 2.0], [6.0, 9.0]]
