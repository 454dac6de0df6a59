"""A2Net: anchor-based and anchor-free temporal action localization (Yang et al., IEEE TIP 2020).

Input features [B, T, D] go through base temporal convs (1x1, then kernel 9, then max-pool 2) and a
pyramid of kernel-3 convs (the first at stride 1, every later one at stride 2). Two modules read
every level:
- anchor-based: per position, one anchor per width ratio (width = ratio * level stride); per anchor
  num_classes + 1 class logits (0 = background), an overlap logit (the tIoU of the refined segment with
  its ground truth) and a centre/log-width refinement (tal.models.anchors coding, scales 0.1 / 0.1).
  Anchors are matched on their refined segments (detached) by tIoU > 0.5; positives, hard negatives
  (predicted overlap > 0.5 but not positive) and `negative_ratio` random easy negatives per positive
  train the classifier (cross-entropy) and the overlap (smooth L1 to the matched tIoU); positives train
  the boundaries (smooth L1 on start and end, in units of the input length T).
- anchor-free: a shared head (two kernel-3 convs per branch) predicts per position num_classes + 1
  logits and the distances to start and end (times a learnable per-level scale), in level-0 steps.
  A ground truth of duration d is given to the levels whose stride S (feature steps) has
  S <= d <= 2S (the first level takes [0, 2S], the last [S, inf)); there, every position whose centre
  lies inside it (ends included) is positive, the first such ground truth in annotation order
  winning. Cross-entropy over all valid positions, smooth L1 on the positives' distances.
- both modules: a segment annotated with several labels trains each of them (`tal.models.targets`:
  the positive's target is spread evenly over its labels; the official code trains the first only).
Total loss = 1 * ab_cls + 10 * ab_overlap + 10 * ab_loc + 30 * af_cls + 1 * af_reg (the official
THUMOS14 weights; `loss_weights` overrides). At inference an anchor scores softmax * sigmoid(overlap)
and is dropped when its background probability is >= 0.98; a position scores its softmax; both sets
are merged and `tal.ops.nms.postprocess_detections` runs per-class NMS with the `nms` settings
(default: hard, tIoU 0.2, 200 detections, the official THUMOS14 setting). Before the merge the
anchor-based scores are multiplied by `ab_score_weight` (the official code's TEST.CONCAT_AB: 1 in its
THUMOS14 config, 0.4 in its ActivityNet ablation); it changes nothing when one module is off.
The official ActivityNet code (Ablation-Comparison-Experiments/ActivityNetv1.3) is class-agnostic; its
switches here: `ab_regression: false` (anchors are not refined, no ab_loc loss), `ab_score: overlap`
(an anchor scores sigmoid(overlap) alone, no ab_cls loss), `af_convs: 4` (convs per anchor-free
branch); with the task's `dataset.class_agnostic` the classifiers are 2-way and the labels come from a
video-level classifier (`dataset.classification`).

Units: segments are [start, end] in feature steps, feature i spanning [i, i + 1). Level l has stride
2 ** (l + 1) feature steps and position j is centred at (j + 0.5) * stride. T is padded on the right to a
multiple of the total stride (2 ** num_levels) and every layer's output is multiplied by its level's
valid mask, so a video's predictions do not depend on the padding or on what it is batched with.

Batch contract (dict, B videos):
- "features": float [B, T, D];
- "mask": bool [B, T], True on valid steps (padding after them);
- "segments": list of B float tensors [N_i, 2], ground truth in feature steps (training only);
- "labels": list of B long tensors [N_i], class indices in [0, num_classes) (training only).
`forward(batch)` returns {"loss": weighted total, "loss_<part>": each unweighted part, detached};
`predict(batch)` returns, per video, (segments [K, 2] in feature steps, scores [K], labels [K]) sorted by
score, highest first, after NMS.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tal.errors import TalInputError
from tal.models.anchors import anchor_centres_widths, decode_segments, match_segments, mine_negatives
from tal.models.targets import class_targets, label_distributions
from tal.ops.nms import postprocess_detections
from tal.registry import MODELS, model_section

THUMOS_PYRAMID_DIMS = (512, 1024, 1024, 2048, 2048, 4096)
THUMOS_RATIOS = (0.5, 0.75, 1.0, 1.5, 2.0)
THUMOS_LOSS_WEIGHTS = {"ab_cls": 1.0, "ab_overlap": 10.0, "ab_loc": 10.0, "af_cls": 30.0, "af_reg": 1.0}
THUMOS_NMS = {"method": "hard", "iou_threshold": 0.2, "max_detections": 200}
NMS_KEYS = {"method", "iou_threshold", "sigma", "score_threshold", "pre_nms_top_k", "max_detections", "class_agnostic",
            "voting_threshold", "voting_weight"}  # tal.ops.nms.postprocess_detections
BASE_STRIDE = 2
AB_SCORES = ("class_x_overlap", "overlap")


def level_strides(num_levels: int) -> list[int]:
    """Stride of each pyramid level in feature steps: 2, 4, 8, ..."""
    return [BASE_STRIDE * 2**level for level in range(num_levels)]


def af_duration_ranges(strides: list[int]) -> torch.Tensor:
    """[L, 2] (min, max) ground-truth duration in feature steps each anchor-free level is responsible for.

    A2Net's [0, 2], [2, 4], [4, 8], ... in level-0 steps: [S, 2S] for a level of stride S, open below
    on the first level and above on the last. Both ends inclusive, so a duration of exactly 2S goes
    to two levels.
    """
    ranges = torch.tensor([[s, 2 * s] for s in strides], dtype=torch.float32)
    ranges[0, 0] = 0.0
    ranges[-1, 1] = float("inf")
    return ranges


def pad_ground_truth(segments: list[torch.Tensor], labels: list[torch.Tensor],
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack per-video ground truth: -> segments [B, G, 2], labels [B, G] long, valid [B, G] bool; G = max(N_i, 1)."""
    max_gt = max([len(s) for s in segments] + [1])  # at least one (invalid) column keeps gathers simple
    padded = torch.zeros(len(segments), max_gt, 2, device=device)
    padded_labels = torch.zeros(len(segments), max_gt, dtype=torch.long, device=device)
    valid = torch.zeros(len(segments), max_gt, dtype=torch.bool, device=device)
    for b, (seg, lab) in enumerate(zip(segments, labels)):
        padded[b, : len(seg)] = seg.to(device=device, dtype=torch.float32).reshape(-1, 2)
        padded_labels[b, : len(lab)] = lab.to(device)
        valid[b, : len(seg)] = True
    return padded, padded_labels, valid


def assign_points(centres: torch.Tensor, point_level: torch.Tensor, ranges: torch.Tensor, gt_segments: torch.Tensor,
                  gt_labels: torch.Tensor, gt_valid: torch.Tensor,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Anchor-free targets: class (0 = background, else label + 1), (to start, to end) distances and the
    ground truth each position was given.

    centres [P] and point_level [P] long describe the positions; ranges [L, 2] the duration range per
    level (`af_duration_ranges`); gt_segments [B, G, 2], gt_labels [B, G], gt_valid [B, G].
    -> classes [B, P] long, distances [B, P, 2] in feature steps (0 on background), index [B, P] long.
    """
    start, end = gt_segments[..., 0], gt_segments[..., 1]  # [B, G]
    duration = end - start  # [B, G]
    low, high = ranges[point_level, 0], ranges[point_level, 1]  # [P]
    d, c = duration[:, None, :], centres[None, :, None]  # [B, 1, G], [1, P, 1]
    in_range = (d >= low[None, :, None]) & (d <= high[None, :, None])  # [B, P, G]
    inside = (c >= start[:, None, :]) & (c <= end[:, None, :])  # [B, P, G]
    candidate = in_range & inside & gt_valid[:, None, :]  # [B, P, G]
    if candidate.shape[-1] == 0:
        zeros = torch.zeros(candidate.shape[:2], dtype=torch.long, device=centres.device)
        return zeros, centres.new_zeros(*candidate.shape[:2], 2), zeros
    first = candidate.int().argmax(dim=-1)  # [B, P], first candidate in annotation order
    assigned = candidate.any(dim=-1)  # [B, P]
    classes = torch.where(assigned, gt_labels.gather(1, first) + 1, torch.zeros_like(first))
    chosen = gt_segments.gather(1, first[..., None].expand(-1, -1, 2))  # [B, P, 2]
    distances = torch.stack([centres - chosen[..., 0], chosen[..., 1] - centres], dim=-1)  # [B, P, 2]
    return classes, distances * assigned[..., None], first


def _masked(x: torch.Tensor, weight: torch.Tensor, full: bool) -> torch.Tensor:
    """x [B, C, T] times its valid mask [B, 1, T]; x itself when every step is valid (x * 1 is x, so the
    values and gradients are the same, without a pass over x forward and backward)."""
    return x if full else x * weight


def _conv(in_dim: int, out_dim: int, kernel_size: int, stride: int = 1) -> nn.Conv1d:
    return nn.Conv1d(in_dim, out_dim, kernel_size, stride=stride, padding=kernel_size // 2)


class A2NetPyramid(nn.Module):
    """Base convs + strided pyramid; [B, D, T] and mask [B, T] -> per level ([B, C_l, T_l], mask [B, T_l]).

    T must be a multiple of 2 ** len(pyramid_dims); level l has T / 2 ** (l + 1) positions.
    """

    def __init__(self, input_dim: int, base_dim: int, pyramid_dims: list[int]):
        super().__init__()
        self.base = nn.ModuleList([_conv(input_dim, base_dim, 1), _conv(base_dim, base_dim, 9)])
        dims = [base_dim] + list(pyramid_dims)
        self.levels = nn.ModuleList(
            _conv(dims[i], dims[i + 1], 3, stride=1 if i == 0 else 2) for i in range(len(pyramid_dims))
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        weight = mask[:, None].to(x.dtype)  # [B, 1, T]
        full = bool(mask.all())  # no padding (every training window): the products by 1 are skipped
        x = _masked(x, weight, full)
        for conv in self.base:
            x = _masked(F.relu(conv(x)), weight, full)
        x = F.max_pool1d(x, BASE_STRIDE)  # [B, C, T / 2]
        weight = F.max_pool1d(weight, BASE_STRIDE)
        outputs = []
        for i, conv in enumerate(self.levels):
            if i > 0:
                weight = F.max_pool1d(weight, 2)
            x = _masked(F.relu(conv(x)), weight, full)
            outputs.append((x, weight[:, 0] > 0))
        return outputs


class AnchorBasedHead(nn.Module):
    """One kernel-3 conv per level -> per anchor [num_classes + 1 logits, overlap logit, dx, dw].

    Outputs are flattened level by level, position-major, ratio-minor: [B, A, num_classes + 4].
    """

    def __init__(self, level_dims: list[int], num_ratios: int, num_classes: int):
        super().__init__()
        self.num_values = num_classes + 4
        self.convs = nn.ModuleList(_conv(dim, num_ratios * self.num_values, 3) for dim in level_dims)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        outputs = []
        for x, conv in zip(levels, self.convs):
            y = conv(x)  # [B, R * V, T_l]
            y = y.view(y.shape[0], -1, self.num_values, y.shape[-1]).permute(0, 3, 1, 2)  # [B, T_l, R, V]
            outputs.append(y.reshape(y.shape[0], -1, self.num_values))
        return torch.cat(outputs, dim=1)


class AnchorFreeHead(nn.Module):
    """1x1 channel reduction per level, then a head shared by all levels.

    -> logits [B, P, num_classes + 1] and distances [B, P, 2] (scaled per level), P = sum of T_l.
    """

    def __init__(self, level_dims: list[int], head_dim: int, num_classes: int, num_convs: int = 2):
        super().__init__()
        self.reduce = nn.ModuleList(_conv(dim, head_dim, 1) for dim in level_dims)
        self.cls_tower = nn.ModuleList(_conv(head_dim, head_dim, 3) for _ in range(num_convs))
        self.reg_tower = nn.ModuleList(_conv(head_dim, head_dim, 3) for _ in range(num_convs))
        self.cls_out = _conv(head_dim, num_classes + 1, 3)
        self.reg_out = _conv(head_dim, 2, 3)
        self.scales = nn.Parameter(torch.ones(len(level_dims)))

    def _branch(self, x: torch.Tensor, weight: torch.Tensor, full: bool, tower: nn.ModuleList,
                out: nn.Conv1d) -> torch.Tensor:
        for conv in tower:
            x = _masked(F.relu(conv(x)), weight, full)
        return out(x).transpose(1, 2)  # [B, T_l, out]

    def forward(self, levels: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        logits, distances = [], []
        for level, ((x, mask), reduce) in enumerate(zip(levels, self.reduce)):
            weight, full = mask[:, None].to(x.dtype), bool(mask.all())  # [B, 1, T_l]
            x = _masked(F.relu(reduce(x)), weight, full)
            logits.append(self._branch(x, weight, full, self.cls_tower, self.cls_out))
            distances.append(self._branch(x, weight, full, self.reg_tower, self.reg_out) * self.scales[level])
        return torch.cat(logits, dim=1), torch.cat(distances, dim=1)


class A2Net(nn.Module):
    """A2Net detector; see the module docstring for the batch contract and units."""

    def __init__(self, input_dim: int, num_classes: int, anchor_based: bool = True, anchor_free: bool = True,
                 base_dim: int = 512, pyramid_dims: list[int] = THUMOS_PYRAMID_DIMS, head_dim: int = 512,
                 anchor_ratios: list[float] = THUMOS_RATIOS, box_scales: tuple[float, float] = (0.1, 0.1),
                 match_tiou: float = 0.5, negative_ratio: float = 1.0, loss_weights: dict | None = None,
                 background_threshold: float = 0.98, nms: dict | None = None, ab_score_weight: float = 1.0,
                 ab_regression: bool = True, ab_score: str = "class_x_overlap", af_convs: int = 2):
        super().__init__()
        if not (anchor_based or anchor_free):
            raise TalInputError("A2Net needs at least one module: set model.anchor_based or model.anchor_free "
                                "to true")
        self.num_classes, self.anchor_based, self.anchor_free = num_classes, anchor_based, anchor_free
        self.anchor_ratios, self.box_scales = list(anchor_ratios), tuple(box_scales)
        self.match_tiou, self.negative_ratio = match_tiou, negative_ratio
        if not 0 < ab_score_weight <= 1:
            raise TalInputError(f"model.ab_score_weight={ab_score_weight!r}: need a weight in (0, 1] for the "
                                "anchor-based scores merged with the anchor-free ones")
        self.background_threshold, self.ab_score_weight = background_threshold, float(ab_score_weight)
        if ab_score not in AB_SCORES or af_convs < 1:
            raise TalInputError(f"model.ab_score must be one of {', '.join(AB_SCORES)} and model.af_convs >= 1, "
                                f"got {ab_score!r} and {af_convs}")
        self.ab_regression, self.ab_score = bool(ab_regression), ab_score
        self.loss_weights = {**THUMOS_LOSS_WEIGHTS, **(loss_weights or {})}
        self.nms = {**THUMOS_NMS, **(nms or {})}
        self.strides = level_strides(len(pyramid_dims))
        self.total_stride = self.strides[-1]
        self.register_buffer("af_ranges", af_duration_ranges(self.strides), persistent=False)  # [L, 2]

        self.pyramid = A2NetPyramid(input_dim, base_dim, list(pyramid_dims))
        if anchor_based:
            self.ab_head = AnchorBasedHead(list(pyramid_dims), len(self.anchor_ratios), num_classes)
        if anchor_free:
            self.af_head = AnchorFreeHead(list(pyramid_dims), head_dim, num_classes, af_convs)
        for module in self.modules():
            if isinstance(module, nn.Conv1d):
                nn.init.kaiming_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def level_lengths(self, num_steps: int) -> list[int]:
        """Positions per level for an input of `num_steps` features (after padding to the total stride)."""
        padded = -(-num_steps // self.total_stride) * self.total_stride
        return [padded // stride for stride in self.strides]

    def outputs(self, features: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw per-anchor and per-position outputs with their geometry (feature steps).

        Anchor-based: "ab_logits" [B, A, C+1], "ab_overlap" [B, A], "ab_offsets" [B, A, 2], "anchors" [A, 2],
        "ab_segments" [B, A, 2], "ab_valid" [B, A]. Anchor-free: "af_logits" [B, P, C+1], "af_distances"
        [B, P, 2] (level-0 steps), "points" [P], "point_level" [P], "af_segments" [B, P, 2], "af_valid" [B, P].
        """
        num_steps = features.shape[1]
        lengths = self.level_lengths(num_steps)
        pad = lengths[0] * self.strides[0] - num_steps
        x = F.pad(features.transpose(1, 2), (0, pad)).contiguous()  # [B, D, T_pad], one copy (not one per conv pass)
        mask = F.pad(mask.bool(), (0, pad))  # [B, T_pad]
        levels = self.pyramid(x, mask)
        level_masks = torch.cat([m for _, m in levels], dim=1)  # [B, P]
        out: dict[str, torch.Tensor] = {}
        if self.anchor_based:
            raw = self.ab_head([f for f, _ in levels])  # [B, A, C+4]
            centre, width, _ = anchor_centres_widths(lengths, self.strides, self.anchor_ratios, x.device)
            anchors = torch.stack([centre - width / 2, centre + width / 2], dim=-1)  # [A, 2]
            offsets = raw[..., -2:] if self.ab_regression else torch.zeros_like(raw[..., -2:])
            out.update(ab_logits=raw[..., : self.num_classes + 1], ab_overlap=raw[..., -3], ab_offsets=offsets,
                       anchors=anchors, ab_segments=decode_segments(offsets, anchors, self.box_scales),
                       ab_valid=level_masks.repeat_interleave(len(self.anchor_ratios), dim=1))
        if self.anchor_free:
            logits, distances = self.af_head(levels)  # [B, P, C+1], [B, P, 2]
            points, _, point_level = anchor_centres_widths(lengths, self.strides, [1.0], x.device)
            steps = distances * self.strides[0]
            out.update(af_logits=logits, af_distances=distances, points=points, point_level=point_level,
                       af_segments=torch.stack([points - steps[..., 0], points + steps[..., 1]], dim=-1),
                       af_valid=level_masks)
        return out

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        features = batch["features"]  # [B, T, D]
        out = self.outputs(features, batch["mask"])
        gt_segments, gt_labels, gt_valid = pad_ground_truth(batch["segments"], batch["labels"], features.device)
        parts: dict[str, torch.Tensor] = {}
        if self.anchor_based:
            parts.update(self._anchor_based_loss(out, gt_segments, gt_labels, gt_valid, features.shape[1]))
        if self.anchor_free:
            parts.update(self._anchor_free_loss(out, gt_segments, gt_labels, gt_valid))
        total = sum(self.loss_weights[name] * value for name, value in parts.items())
        return {"loss": total, **{f"loss_{name}": value.detach() for name, value in parts.items()}}

    def _anchor_based_loss(self, out: dict, gt_segments: torch.Tensor, gt_labels: torch.Tensor,
                           gt_valid: torch.Tensor, window_steps: int) -> dict[str, torch.Tensor]:
        segments = out["ab_segments"]  # [B, A, 2]
        best, index, _ = match_segments(segments.detach(), gt_segments, gt_valid, self.match_tiou)  # [B, A] x2
        positive, hard, easy = mine_negatives(best, out["ab_overlap"].detach(), out["ab_valid"], self.match_tiou,
                                              self.negative_ratio)
        selected = positive | hard | easy  # [B, A]
        targets = class_targets(label_distributions(gt_segments, gt_labels, gt_valid, self.num_classes), index,
                                positive)  # [B, A, C+1]
        cls = _mean_or_zero(F.cross_entropy(out["ab_logits"][selected], targets[selected], reduction="none"),
                            out["ab_logits"])
        overlap = _mean_or_zero(F.smooth_l1_loss(out["ab_overlap"][selected], best[selected], reduction="none"),
                                out["ab_overlap"])
        matched = gt_segments.gather(1, index[..., None].expand(-1, -1, 2))  # [B, A, 2]
        error = (segments[positive] - matched[positive]) / window_steps  # [num_pos, 2]
        loc = _mean_or_zero(F.smooth_l1_loss(error, torch.zeros_like(error), reduction="none"), segments) * 2
        parts = {"ab_cls": cls, "ab_overlap": overlap, "ab_loc": loc}
        if not self.ab_regression:
            del parts["ab_loc"]
        if self.ab_score == "overlap":
            del parts["ab_cls"]
        return parts

    def _anchor_free_loss(self, out: dict, gt_segments: torch.Tensor, gt_labels: torch.Tensor,
                          gt_valid: torch.Tensor) -> dict[str, torch.Tensor]:
        classes, distances, index = assign_points(out["points"], out["point_level"], self.af_ranges, gt_segments,
                                                  gt_labels, gt_valid)  # [B, P], [B, P, 2], [B, P]
        valid = out["af_valid"]  # [B, P]
        soft = class_targets(label_distributions(gt_segments, gt_labels, gt_valid, self.num_classes), index,
                             classes > 0)  # [B, P, C+1]
        cls = _mean_or_zero(F.cross_entropy(out["af_logits"][valid], soft[valid], reduction="none"),
                            out["af_logits"])
        positive = valid & (classes > 0)
        targets = distances[positive] / self.strides[0]  # [num_pos, 2], level-0 steps
        reg = _mean_or_zero(F.smooth_l1_loss(out["af_distances"][positive], targets, reduction="none"),
                            out["af_distances"]) * 2
        return {"af_cls": cls, "af_reg": reg}

    @torch.no_grad()
    def predict(self, batch: dict) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per video: (segments [K, 2] in feature steps, scores [K], labels [K]), best first, after NMS."""
        features, mask = batch["features"], batch["mask"].bool()
        out = self.outputs(features, mask)
        segments, scores, labels, keep = [], [], [], []
        if self.anchor_based:
            probs = out["ab_logits"].softmax(dim=-1)  # [B, A, C+1]
            overlap = torch.sigmoid(out["ab_overlap"])  # [B, A]
            if self.ab_score == "overlap":  # the official ActivityNet code: the overlap score alone
                score, label = overlap, torch.zeros_like(overlap, dtype=torch.long)
                kept = out["ab_valid"]
            else:
                score, label = (probs[..., 1:] * overlap[..., None]).max(dim=-1)  # [B, A]
                kept = out["ab_valid"] & (probs[..., 0] < self.background_threshold)
            segments.append(out["ab_segments"])
            scores.append(score * (self.ab_score_weight if self.anchor_free else 1.0))
            labels.append(label)
            keep.append(kept)
        if self.anchor_free:
            score, label = out["af_logits"].softmax(dim=-1)[..., 1:].max(dim=-1)  # [B, P]
            segments.append(out["af_segments"])
            scores.append(score)
            labels.append(label)
            keep.append(out["af_valid"])
        segments, scores, labels, keep = (torch.cat(t, dim=1) for t in (segments, scores, labels, keep))
        num_valid = mask.sum(dim=1).to(segments.dtype)  # [B]
        segments = torch.minimum(segments.clamp(min=0.0), num_valid[:, None, None])  # [B, N, 2]
        keep &= segments[..., 1] > segments[..., 0]
        return [postprocess_detections(segments[b][keep[b]], scores[b][keep[b]], labels[b][keep[b]], **self.nms)
                for b in range(features.shape[0])]


def _mean_or_zero(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Mean of `values`, or a zero that still belongs to the graph of `like` when there are none."""
    return values.mean() if values.numel() else like.sum() * 0.0


MODEL_KEYS = {"input_dim", "num_classes", "anchor_based", "anchor_free", "base_dim", "pyramid_dims", "head_dim",
              "anchor_ratios", "box_scales", "match_tiou", "negative_ratio", "loss_weights", "background_threshold",
              "nms", "ab_score_weight", "ab_regression", "ab_score", "af_convs"}


@MODELS.register("a2net")
def build_a2net(cfg: dict) -> A2Net:
    """An A2Net from the `model` section of a config (keys: MODEL_KEYS; `name`/`type` are ignored)."""
    cfg = model_section(cfg, "a2net", MODEL_KEYS, required=("input_dim", "num_classes"),
                        sections={"loss_weights": THUMOS_LOSS_WEIGHTS, "nms": NMS_KEYS})
    return A2Net(**cfg)
