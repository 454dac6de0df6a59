"""S3D: single-shot multi-span temporal action detection (Zhang et al., BMVC 2018, arXiv 1807.08069).

What the paper specifies: SSD applied to time. A base network (C3D up to conv5b, L/8 in time) is
followed by auxiliary conv layers, each halving the temporal length (L/16 ... L/256); every map of
that pyramid carries default spans of several scales centred at each of its locations. Per default
span a small conv predicts num_classes + 1 scores (0 = background) and a centre / width adjustment.
Training matches default spans to ground truth as SSD does (each ground truth's best default span,
plus every span with tIoU > 0.5) and minimises a softmax confidence loss over the positives and the
hardest negatives (3 per positive) plus smooth L1 on the positives' adjustments, both divided by the
number of positives. Inference ranks spans by class score, decodes them and runs per-class NMS.

What tal settles (the paper runs a C3D trunk on frames; tal runs on cached features [B, T, D]):
- pyramid: a 1x1 then a kernel-3 conv at stride 1 (level 0, one feature step, conv5b's place), then
  num_levels - 1 kernel-3 convs at stride 2, all `hidden_dim` wide with ReLU: level l has stride
  2 ** l feature steps (six levels, 1 ... 32 steps, mirror L/8 ... L/256);
- default spans: position j of a level of stride S is centred at (j + 0.5) * S, with one span of
  width ratio * S per ratio of that level (`ratios`: one list for every level or one list per level;
  default 1, 1.5, 2, 3 on every level);
- predictors: one kernel-3 conv per level (not shared) -> per span num_classes + 1 logits and
  (dx, dw), coded by `tal.models.anchors` with scales `box_scales` (0.1, 0.2: SSD's variances);
- matching: `tal.models.anchors.match_with_best_spans` (tIoU strictly above `match_tiou`; a forced
  best span must overlap its ground truth; spans at padded positions are never matched);
- hard negatives: per video, round(negative_ratio * its positives), ranked by background
  cross-entropy (`mine_hard_negatives`); a video without positives adds no negatives, as in SSD;
- loss_cls = cross-entropy summed over positives and mined negatives, loss_loc = smooth L1 summed
  over both offsets of the positives, each divided by the batch's positives; total = 1 * cls + 1 *
  loc (SSD's alpha = 1; `loss_weights` overrides);
- inference: softmax; every (valid span, class) pair is a candidate scored by that class's
  probability; spans are decoded, clipped to [0, valid steps], empty ones dropped, and
  `tal.ops.nms.postprocess_detections` runs with the `nms` settings (default SSD's test setting:
  hard per-class NMS at tIoU 0.45, scores below 0.01 dropped, 200 detections per video).

Units: segments are [start, end] in feature steps, feature i spanning [i, i + 1). T is padded on
the right to a multiple of the total stride 2 ** (num_levels - 1) and every layer's output is
multiplied by its level's valid mask, so a video's predictions do not depend on the padding or on
what it is batched with.

Batch contract (dict, B videos), the same as A2Net's:
- "features": float [B, T, D];
- "mask": bool [B, T], True on valid steps (padding after them);
- "segments": list of B float tensors [N_i, 2], ground truth in feature steps (training only);
- "labels": list of B long tensors [N_i], class indices in [0, num_classes) (training only).
`forward(batch)` returns {"loss": weighted total, "loss_cls", "loss_loc": unweighted parts, detached};
`predict(batch)` returns, per video, (segments [K, 2] in feature steps, scores [K], labels [K]) sorted by
score, highest first, after NMS.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tal.errors import TalInputError
from tal.models.a2net import NMS_KEYS, _conv, _masked, pad_ground_truth
from tal.models.anchors import (anchor_segments, decode_segments, encode_segments, match_with_best_spans,
                                mine_hard_negatives)
from tal.models.targets import class_targets, label_distributions
from tal.ops.nms import postprocess_detections
from tal.registry import MODELS, model_section

DEFAULT_RATIOS = (1.0, 1.5, 2.0, 3.0)
SSD_LOSS_WEIGHTS = {"cls": 1.0, "loc": 1.0}
SSD_NMS = {"method": "hard", "iou_threshold": 0.45, "score_threshold": 0.01, "max_detections": 200}


class S3DPyramid(nn.Module):
    """Base convs at stride 1, then stride-2 convs: [B, D, T], mask [B, T] -> per level ([B, H, T_l], mask [B, T_l]).

    T must be a multiple of 2 ** (num_levels - 1); level l has T / 2 ** l positions.
    """

    def __init__(self, input_dim: int, hidden_dim: int, num_levels: int):
        super().__init__()
        self.base = nn.ModuleList([_conv(input_dim, hidden_dim, 1), _conv(hidden_dim, hidden_dim, 3)])
        self.levels = nn.ModuleList(_conv(hidden_dim, hidden_dim, 3, stride=2) for _ in range(num_levels - 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        weight = mask[:, None].to(x.dtype)  # [B, 1, T]
        full = bool(mask.all())  # no padding: the products by 1 are skipped (the same numbers)
        x = _masked(x, weight, full)
        for conv in self.base:
            x = _masked(F.relu(conv(x)), weight, full)
        outputs = [(x, mask)]
        for conv in self.levels:
            weight = F.max_pool1d(weight, 2)  # a position is valid when its span holds a valid step
            x = _masked(F.relu(conv(x)), weight, full)
            outputs.append((x, weight[:, 0] > 0))
        return outputs


class S3D(nn.Module):
    """S3D detector; see the module docstring for the batch contract and units."""

    def __init__(self, input_dim: int, num_classes: int, hidden_dim: int = 512, num_levels: int = 6,
                 ratios: list[float] | list[list[float]] = DEFAULT_RATIOS, box_scales: tuple[float, float] = (0.1, 0.2),
                 match_tiou: float = 0.5, negative_ratio: float = 3.0, loss_weights: dict | None = None,
                 nms: dict | None = None):
        super().__init__()
        self.num_classes, self.box_scales = num_classes, tuple(box_scales)
        self.match_tiou, self.negative_ratio = match_tiou, negative_ratio
        self.loss_weights = {**SSD_LOSS_WEIGHTS, **(loss_weights or {})}
        self.nms = {**SSD_NMS, **(nms or {})}
        self.ratios = level_ratios(ratios, num_levels)  # [L][R_l]
        self.strides = [2**level for level in range(num_levels)]
        self.pyramid = S3DPyramid(input_dim, hidden_dim, num_levels)
        self.num_values = num_classes + 3  # logits (background first), dx, dw
        self.predictors = nn.ModuleList(_conv(hidden_dim, len(r) * self.num_values, 3) for r in self.ratios)

    def level_lengths(self, num_steps: int) -> list[int]:
        """Positions per level for an input of `num_steps` features (after padding to the total stride)."""
        total = self.strides[-1]
        padded = -(-num_steps // total) * total
        return [padded // stride for stride in self.strides]

    def outputs(self, features: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per default span, flattened level, position, ratio: "logits" [B, A, C+1], "offsets" [B, A, 2],
        "anchors" [A, 2] (default spans, feature steps), "valid" [B, A] (span at a position holding valid steps)."""
        num_steps, num_videos = features.shape[1], features.shape[0]
        lengths = self.level_lengths(num_steps)
        x = F.pad(features.transpose(1, 2), (0, lengths[0] - num_steps)).contiguous()  # [B, D, T_pad], one copy
        mask = F.pad(mask.bool(), (0, lengths[0] - num_steps))  # [B, T_pad]
        raw, anchors, valid = [], [], []
        for (level, level_mask), predictor, ratios, stride in zip(self.pyramid(x, mask), self.predictors, self.ratios,
                                                                  self.strides):
            y = predictor(level)  # [B, R * V, T_l]
            y = y.view(num_videos, len(ratios), self.num_values, -1).permute(0, 3, 1, 2)  # [B, T_l, R, V]
            raw.append(y.reshape(num_videos, -1, self.num_values))  # [B, T_l * R, V]
            anchors.append(anchor_segments([level_mask.shape[1]], [stride], ratios, x.device))  # [T_l * R, 2]
            valid.append(level_mask.repeat_interleave(len(ratios), dim=1))  # [B, T_l * R]
        raw = torch.cat(raw, dim=1)  # [B, A, V]
        return {"logits": raw[..., :-2], "offsets": raw[..., -2:], "anchors": torch.cat(anchors),
                "valid": torch.cat(valid, dim=1)}

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        features = batch["features"]  # [B, T, D]
        out = self.outputs(features, batch["mask"])
        gt_segments, gt_labels, gt_valid = pad_ground_truth(batch["segments"], batch["labels"], features.device)
        _, index, positive = match_with_best_spans(out["anchors"], out["valid"], gt_segments, gt_valid,
                                                   self.match_tiou)  # [B, A] x2
        log_probs = out["logits"].log_softmax(dim=-1)  # [B, A, C+1]
        num_positive = positive.sum(dim=1)  # [B]
        negative = mine_hard_negatives(-log_probs[..., 0].detach(), out["valid"] & ~positive, num_positive,
                                       self.negative_ratio)  # [B, A]
        selected = positive | negative
        targets = class_targets(label_distributions(gt_segments, gt_labels, gt_valid, self.num_classes), index,
                                positive)  # [B, A, C+1]
        normaliser = num_positive.sum().clamp(min=1)
        cls = -(targets[selected] * log_probs[selected]).sum() / normaliser
        matched = gt_segments.gather(1, index[..., None].expand(-1, -1, 2))  # [B, A, 2]
        anchors = out["anchors"].expand_as(matched)  # [B, A, 2]
        targets = encode_segments(matched[positive], anchors[positive], self.box_scales)  # [P, 2]
        loc = F.smooth_l1_loss(out["offsets"][positive], targets, reduction="sum") / normaliser
        parts = {"cls": cls, "loc": loc}
        total = sum(self.loss_weights[name] * value for name, value in parts.items())
        return {"loss": total, **{f"loss_{name}": value.detach() for name, value in parts.items()}}

    @torch.no_grad()
    def predict(self, batch: dict) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per video: (segments [K, 2] in feature steps, scores [K], labels [K]), best first, after NMS."""
        features, mask = batch["features"], batch["mask"].bool()
        out = self.outputs(features, mask)
        probs = out["logits"].softmax(dim=-1)[..., 1:]  # [B, A, C]
        segments = decode_segments(out["offsets"], out["anchors"], self.box_scales)  # [B, A, 2]
        num_valid = mask.sum(dim=1).to(segments.dtype)  # [B]
        segments = torch.minimum(segments.clamp(min=0.0), num_valid[:, None, None])
        keep = out["valid"] & (segments[..., 1] > segments[..., 0])  # [B, A]
        classes = torch.arange(self.num_classes, device=features.device)  # [C]
        results = []
        for b in range(features.shape[0]):
            kept = int(keep[b].sum())  # every (span, class) pair is a candidate: K * C of them
            results.append(postprocess_detections(segments[b][keep[b]].repeat_interleave(self.num_classes, dim=0),
                                                  probs[b][keep[b]].reshape(-1), classes.repeat(kept), **self.nms))
        return results


def level_ratios(ratios: list[float] | list[list[float]], num_levels: int) -> list[list[float]]:
    """Width ratios per level: one flat list is used on every level, a list of lists gives each level its own."""
    if num_levels < 1:
        raise TalInputError(f"model.num_levels must be at least 1, got {num_levels}")
    nested = [isinstance(r, (list, tuple)) for r in ratios]
    if any(nested) and not all(nested):
        raise TalInputError(f"model.ratios mixes numbers and lists, got {list(ratios)}; give one flat list for "
                            f"all levels or one list per level")
    per_level = [list(r) for r in ratios] if any(nested) else [list(ratios)] * num_levels
    if len(per_level) != num_levels:
        raise TalInputError(f"model.ratios has {len(per_level)} lists for {num_levels} levels; give one list per "
                            f"level or one flat list for all")
    for r in per_level:
        if not r or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in r):
            raise TalInputError(f"model.ratios: every level needs at least one positive number, got {list(ratios)}")
    return [[float(v) for v in r] for r in per_level]


MODEL_KEYS = {"input_dim", "num_classes", "hidden_dim", "num_levels", "ratios", "box_scales", "match_tiou",
              "negative_ratio", "loss_weights", "nms"}


@MODELS.register("s3d")
def build_s3d(cfg: dict) -> S3D:
    """An S3D from the `model` section of a config (keys: MODEL_KEYS; `name`/`type` are ignored)."""
    cfg = model_section(cfg, "s3d", MODEL_KEYS, required=("input_dim", "num_classes"),
                        sections={"loss_weights": SSD_LOSS_WEIGHTS, "nms": NMS_KEYS})
    if not 0.0 <= cfg.get("match_tiou", 0.5) < 1.0:
        raise TalInputError(f"model.match_tiou must be in [0, 1), got {cfg['match_tiou']}")
    if cfg.get("negative_ratio", 3.0) < 0:
        raise TalInputError(f"model.negative_ratio must be >= 0, got {cfg['negative_ratio']}")
    return S3D(**cfg)

