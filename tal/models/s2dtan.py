"""S-2D-TAN: class-agnostic action proposals on sparse 2D maps, one per temporal scale (Zhang et al., 2019).

What the paper says (arXiv 1912.03612, the HACS 2019 winning report): 2D-TAN's map of candidate
moments (start x end) lets adjacent proposals share context through 2D convs, but its sparse sampling
keeps long moments only at coarse strides inside one map, so a kernel around a long moment sees few
valid neighbours: the context is unbalanced, rich for short proposals and poor for long ones. S-2D-TAN
gives long proposals as much context by building the maps at several temporal scales, and combines
its class-agnostic proposals with a simple action classifier to get detections.

What tal settles (the report's details were not at hand; the map mechanics follow microsoft/2D-TAN
and its multi-scale journal extension, MS-2D-TAN):
- Clips: the features [B, N * frame_stride, D] go through a 1x1 conv + ReLU and average pooling by
  frame_stride (2D-TAN's frame module) to N clips. Scale s > 0 has N / 2**s clips, each made from two
  of the scale below by a kernel-2 stride-2 conv + ReLU, so clip k of scale s spans feature steps
  [k, k + 1) * frame_stride * 2**s exactly.
- Maps: `scales` lists how many new moment lengths each scale adds (2D-TAN's scale_layers, default
  `default_scale_layers(num_clips)`, e.g. [16, 8, 8] for N = 64). Scale 0 holds every moment of 1..L0
  clips; scale s holds the moments of its own clips up to `span_s` long (a band along the diagonal:
  `sparse_map_mask(n_s, [span_s])`), and *proposes* only those longer than the finer scale covers:
  lengths span_{s-1} // 2 + 1 .. span_s with span_s = span_{s-1} // 2 + L_s. The shorter band cells are
  context for the masked map convs. So every scale's proposals have the same band of neighbours in
  their own map, and with even spans the union of proposals over the scales is exactly 2D-TAN's sparse
  candidate set (1104 moments for N = 64).
- Per scale: cell features by `SparsePropPool` (max over the spanned clips; "conv": `SparsePropConv`),
  `MaskedMapConv` (map_layers layers of map_kernel), a 1x1 conv score. Scales share no weights.
- Targets and loss: a cell's target is its largest tIoU with any ground-truth segment of the video
  (0 without any), and the loss is 2D-TAN's scaled-IoU binary cross-entropy (`scaled_iou_bce`,
  min_iou / max_iou / bias), averaged over each scale's proposal cells and reported as `loss_scale<s>`.
  The total (`loss.scale_weighting`) is, by default, the sum of the scales' means, as MS-2D-TAN
  (microsoft/VideoX MS-2D-TAN/moment_localization/run.py adds one loss per scale), so every scale
  counts alike; `cells` is tal's former mean over all proposal cells, where the finest scale dominates
  (weights 0.82 / 0.15 / 0.03 for scales [16, 8, 8] at N = 64).
- Inference: sigmoid scores of the proposal cells of every scale, as segments in feature steps clipped
  to the valid steps, then `tal.ops.nms.postprocess_detections` with the `nms` settings (default hard
  NMS at tIoU 0.5, 2D-TAN's rule) and the `max_proposals` (100) best kept.
- Classes: the head is class-agnostic; combining its proposals with video-level classification scores
  into detections is the training task's job.

Batch contract (dict, B videos):
- "features": float [B, T, D] with T = num_clips * frame_stride (rescale the video first);
- "mask": bool [B, T], True on valid steps (padding after them; optional, default all valid);
- "segments": list of B float tensors [N_i, 2], ground truth in feature steps, feature i spanning
  [i, i + 1) (training only); "labels" is ignored.
`forward(batch)` returns {"loss": total, "loss_scale<s>": each scale's BCE, detached};
`predict(batch)` returns, per video, (segments [K, 2] in feature steps, scores [K], labels [K] zeros long),
best first.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tal.errors import TalInputError
from tal.models.layers import TemporalConvPool
from tal.models.map_conv import MaskedMapConv, check_plan
from tal.models.tan2d import (
    SparsePropConv,
    SparsePropPool,
    cell_indices,
    default_scale_layers,
    scaled_iou_bce,
    sparse_map_diagonals,
    sparse_map_mask,
)
from tal.ops.nms import postprocess_detections
from tal.ops.segments import tiou
from tal.registry import MODELS, model_section

DEFAULT_NMS = {"method": "hard", "iou_threshold": 0.5}
# postprocess_detections' settings, less those the head decides itself
NMS_KEYS = set(inspect.signature(postprocess_detections).parameters) - {
    "segments", "scores", "labels", "max_detections", "class_agnostic"}


@dataclass(frozen=True)
class ScaleMap:
    """The geometry of one scale's map."""

    num_clips: int  # clips at this scale: N / 2**s
    clip_steps: int  # feature steps per clip: frame_stride * 2**s
    span: int  # the map holds every moment of 1..span clips (diagonals 0..span - 1)
    first_proposal: int  # the shortest proposal is first_proposal + 1 clips (shorter cells are context)


def scale_maps(num_clips: int, scales: list[int], frame_stride: int = 1) -> list[ScaleMap]:
    """One ScaleMap per entry of `scales` (new moment lengths per scale); see the module docstring."""
    if not scales or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in scales):
        raise TalInputError(f"model.scales must be a non-empty list of positive integers (new moment lengths per "
                            f"scale, e.g. [16, 8, 8]), got {scales!r}")
    factor = 2 ** (len(scales) - 1)
    if num_clips % factor:
        raise TalInputError(f"model.scales={scales} halves the clips {len(scales) - 1} times, so model.num_clips must "
                            f"be a multiple of {factor}, got {num_clips}")
    maps, first = [], 0
    for s, layers in enumerate(scales):
        clips, span = num_clips // 2**s, first + layers
        if span > clips:
            raise TalInputError(f"model.scales={scales}: scale {s} has {clips} clips but would hold moments of up to "
                                f"{span} of them; give that scale at most {clips - first} lengths")
        maps.append(ScaleMap(clips, frame_stride * 2**s, span, first))
        first = span // 2
    return maps


def max_iou_targets(proposals: torch.Tensor, gt_segments: list[torch.Tensor]) -> torch.Tensor:
    """Each proposal's largest tIoU with a ground-truth segment of its video: [P, 2], B x [G_b, 2] -> [B, P].

    A video without ground truth gets 0 everywhere. The ground truth is padded with [0, 0] rows, which
    overlap nothing.
    """
    rows = [g.to(device=proposals.device, dtype=proposals.dtype).reshape(-1, 2) for g in gt_segments]
    padded = nn.utils.rnn.pad_sequence(rows + [proposals.new_zeros(1, 2)], batch_first=True)[:-1]  # [B, G, 2]
    return tiou(proposals[None, :, None, :], padded[:, None, :, :]).amax(dim=-1)  # [B, P]


class ScaleHead(nn.Module):
    """One scale: cell features on its band, masked map convs, a 1x1 score.

    clips [B, C, n] -> logits [B, n, n] (0 off the band). Buffers: `band_mask` [n, n] (the map's cells),
    `proposal_mask` [n, n] and `cells` [P_s] (flat start * n + end of the proposal cells, diagonal by
    diagonal), `segments` [P_s, 2] (those cells in feature steps, same order).
    """

    def __init__(self, scale: ScaleMap, hidden_dim: int, prop: str, map_kernel: int, map_layers: int,
                 map_conv_plan: str = "auto"):
        super().__init__()
        n = scale.num_clips
        band = sparse_map_diagonals(n, [scale.span])  # stride 1, offsets 0..span - 1
        band_mask = sparse_map_mask(n, [scale.span])
        cells = cell_indices(n, band[scale.first_proposal:])
        if prop == "pool":
            self.prop = SparsePropPool(n, band)
        elif prop == "conv":
            self.prop = SparsePropConv(n, band, [scale.span], hidden_dim)
        else:
            raise TalInputError(f"model.prop must be 'pool' or 'conv', got {prop!r}")
        self.map_conv = MaskedMapConv(band_mask, hidden_dim, hidden_dim, map_kernel, map_layers, map_conv_plan)
        self.score = nn.Conv2d(hidden_dim, 1, 1)
        proposal_mask = torch.zeros(n * n, dtype=torch.bool)
        proposal_mask[cells] = True
        segments = torch.stack([cells // n, cells % n + 1], dim=-1).float() * scale.clip_steps  # [P_s, 2]
        self.register_buffer("band_mask", band_mask, persistent=False)
        self.register_buffer("proposal_mask", proposal_mask.view(n, n), persistent=False)
        self.register_buffer("cells", cells, persistent=False)
        self.register_buffer("segments", segments, persistent=False)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        cell_map = self.prop(clips)  # [B, C, n, n], 0 off the band
        return self.score(self.map_conv(cell_map))[:, 0] * self.band_mask.to(clips.dtype)  # [B, n, n]

    def proposal_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """[B, n, n] -> [B, P_s], in the order of `segments`."""
        return logits.flatten(1)[:, self.cells]

    def target_map(self, iou: torch.Tensor) -> torch.Tensor:
        """Proposal targets [B, P_s] -> [B, n, n] (0 on the other cells), the layout `scaled_iou_bce` reads."""
        n = self.band_mask.shape[0]
        out = iou.new_zeros(iou.shape[0], n * n)
        out[:, self.cells] = iou
        return out.view(-1, n, n)


class S2DTAN(nn.Module):
    """Sparse 2D Temporal Adjacent Network, a proposal head; see the module docstring for the batch contract."""

    proposal_head = True

    def __init__(self, input_dim: int, num_clips: int = 64, frame_stride: int = 1, scales: list[int] | None = None,
                 hidden_dim: int = 512, prop: str = "pool", map_kernel: int = 5, map_layers: int = 8,
                 min_iou: float = 0.5, max_iou: float = 1.0, bias: float = 0.0, scale_weighting: str = "equal",
                 nms: dict | None = None, max_proposals: int = 100, map_conv_plan: str = "auto"):
        super().__init__()
        check_plan(map_conv_plan)
        if scale_weighting not in SCALE_WEIGHTINGS:
            raise TalInputError(f"model.loss.scale_weighting must be one of {', '.join(SCALE_WEIGHTINGS)}, "
                                f"got {scale_weighting!r}")
        self.num_clips, self.frame_stride = num_clips, frame_stride
        self.min_iou, self.max_iou, self.bias = min_iou, max_iou, bias
        self.scale_weighting = scale_weighting
        self.scales = default_scale_layers(num_clips) if scales is None else list(scales)
        self.maps = scale_maps(num_clips, self.scales, frame_stride)
        self.nms = {**DEFAULT_NMS, **(nms or {})}
        self.max_proposals = max_proposals

        self.frame = TemporalConvPool(input_dim, hidden_dim, kernel_size=1, pool_stride=frame_stride)
        self.downsample = nn.ModuleList(nn.Conv1d(hidden_dim, hidden_dim, 2, stride=2) for _ in self.maps[1:])
        self.heads = nn.ModuleList(ScaleHead(m, hidden_dim, prop, map_kernel, map_layers, map_conv_plan)
                                   for m in self.maps)
        self.register_buffer("proposals", torch.cat([h.segments for h in self.heads]), persistent=False)  # [P, 2]

    def scale_logits(self, batch: dict) -> list[torch.Tensor]:
        """Raw score maps, one per scale: [B, n_s, n_s], 0 off each scale's band."""
        features = batch["features"]  # [B, T, D]
        expected = self.num_clips * self.frame_stride
        if features.dim() != 3 or features.shape[1] != expected:
            raise TalInputError(f"s2dtan expects features [B, num_clips * frame_stride = {expected}, D], got "
                                f"{list(features.shape)}; rescale each video to {expected} steps (the dataset's "
                                f"num_clips / frame_stride must match the model's)")
        mask = batch.get("mask")
        if mask is not None:
            features = features * mask[..., None].to(features.dtype)
        clips = self.frame(features.transpose(1, 2))  # [B, C, N]
        logits = []
        for s, head in enumerate(self.heads):
            if s > 0:
                clips = F.relu(self.downsample[s - 1](clips))  # [B, C, N / 2**s]
            logits.append(head(clips))
        return logits

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        iou = max_iou_targets(self.proposals, batch["segments"])  # [B, P]
        parts, counts = {}, []
        for s, (head, logits, target) in enumerate(zip(self.heads, self.scale_logits(batch),
                                                       iou.split([len(h.cells) for h in self.heads], dim=1))):
            parts[f"scale{s}"] = scaled_iou_bce(logits, head.target_map(target), head.proposal_mask, self.min_iou,
                                                self.max_iou, self.bias)
            counts.append(len(head.cells))
        if self.scale_weighting == "equal":
            total = sum(parts.values())
        else:
            total = sum(count * part for count, part in zip(counts, parts.values())) / sum(counts)
        return {"loss": total, **{f"loss_{name}": value.detach() for name, value in parts.items()}}

    @torch.no_grad()
    def predict(self, batch: dict) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per video: (segments [K, 2] in feature steps, scores [K], labels [K] zeros), best first, after NMS."""
        scores = torch.cat([torch.sigmoid(head.proposal_logits(logits))
                            for head, logits in zip(self.heads, self.scale_logits(batch))], dim=1)  # [B, P]
        features = batch["features"]
        mask = batch.get("mask")
        num_valid = (torch.full((features.shape[0],), features.shape[1], device=features.device) if mask is None
                     else mask.bool().sum(dim=1)).to(self.proposals.dtype)  # [B]
        outputs = []
        for b in range(features.shape[0]):
            segments = torch.minimum(self.proposals, num_valid[b])  # [P, 2] clipped to the valid steps
            keep = segments[:, 1] > segments[:, 0]
            outputs.append(postprocess_detections(segments[keep], scores[b][keep], None, **self.nms,
                                                  max_detections=self.max_proposals))
        return outputs


MODEL_KEYS = {"input_dim", "num_clips", "frame_stride", "scales", "hidden_dim", "prop", "map_kernel", "map_layers",
              "map_conv_plan", "loss", "nms", "max_proposals"}
LOSS_KEYS = {"min_iou", "max_iou", "bias", "scale_weighting"}
SCALE_WEIGHTINGS = ("equal", "cells")


@MODELS.register("s2dtan")
def build_s2dtan(cfg: dict) -> S2DTAN:
    """An S2DTAN from the `model` section of a config (keys: MODEL_KEYS; `name`/`type` are ignored).

    `loss` holds min_iou / max_iou / bias (2D-TAN's scaled IoU) and scale_weighting; `nms` the settings of
    `tal.ops.nms.postprocess_detections` (NMS_KEYS) over DEFAULT_NMS; `max_proposals` caps the output.
    """
    if "max_detections" in (cfg.get("nms") or {}):
        raise TalInputError("model.nms.max_detections is not used by s2dtan: set model.max_proposals instead")
    cfg = model_section(cfg, "s2dtan", MODEL_KEYS, sections={"loss": LOSS_KEYS, "nms": NMS_KEYS})
    loss = dict(cfg.pop("loss", None) or {})
    for key in ("num_clips", "frame_stride", "max_proposals", "hidden_dim"):
        value = cfg.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TalInputError(f"model.{key} must be a positive integer, got {value!r}")
    kernel, layers = cfg.get("map_kernel", 5), cfg.get("map_layers", 8)
    if (kernel - 1) * layers % 2:
        raise TalInputError(f"model.map_kernel={kernel} and model.map_layers={layers}: (map_kernel - 1) * map_layers "
                            f"must be even (the map keeps its size); use an odd map_kernel")
    low, high = loss.get("min_iou", 0.5), loss.get("max_iou", 1.0)
    if not 0.0 <= low < high <= 1.0:
        raise TalInputError(f"model.loss needs 0 <= min_iou < max_iou <= 1, got min_iou={low}, max_iou={high}")
    return S2DTAN(**cfg, **loss)
