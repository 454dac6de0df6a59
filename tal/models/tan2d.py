"""2D-TAN: moment retrieval on a 2D map of candidate moments (Zhang et al., AAAI 2020).

A video is cut into N clips; cell (i, j) of an N x N map is the moment from the start of clip i to the
end of clip j, i.e. [i, j + 1] * duration / N seconds. Only a sparse set of cells is used (`sparse_map_mask`:
every cell up to 16 clips long, longer ones at a growing stride). Each cell gets a feature (max pooling
or stacked convs over its clips), is multiplied by the sentence vector and L2-normalised, a masked 2D
conv stack lets neighbouring moments talk, and a 1x1 conv scores it. Training regresses the score to
the cell's IoU with the ground truth, rescaled between `min_iou` and `max_iou` (binary cross-entropy
over the valid cells).

Batch contract (dict; B queries):
- "features": float [V, N * frame_stride, D], the videos averaged to that many clips
  (`tal.models.layers.average_to_num_clips`; 2D-TAN also L2-normalises each raw feature first);
- "video_index": long [B], the row of "features" each query is about (optional when V = B and query
  b is about row b): queries about one video share its clip features, map and projection;
- text, from `model.prepare_text(sentences)`: "words" (token ids [B, L] long, or word vectors
  [B, L, E]) and "word_mask" [B, L] for the LSTM encoder; "sentence_vectors" [B, 384] for minilm;
- "iou_targets": float [B, N, N], IoU of every cell with the ground truth (`iou_target_map`), for `forward`;
  or, instead, "segment" float [B, 2] (start_s, end_s) from which `forward` computes them;
- "duration": [B] seconds, for `decode_moments`.
`forward(batch)` returns {"loss": scalar, "loss_bce": detached copy}; `predict(batch)` returns the
score map [B, N, N] (sigmoid scores on valid cells, 0 elsewhere); `decode(scores, durations, ...)`
turns score maps into ranked moments in seconds.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tal.errors import TalInputError
from tal.registry import MODELS, model_section
from tal.models.layers import TemporalConvPool, iter_span_max
from tal.models.map_conv import MaskedMapConv, check_plan
from tal.models.text import Vocabulary, build_text_encoder
from tal.ops.ranked_nms import kept_moments, ranked_nms
from tal.ops.segments import tiou
from tal.ops.threads import single_threaded

SHORT_SPAN_LAYERS = 16
LONG_SPAN_LAYERS = 8


def default_scale_layers(num_clips: int) -> list[int]:
    """Layers per scale of the sparse map: 2D-TAN's [16], [16, 8, 8], [16, 8, 8, 8] for N = 16, 64, 128.

    Scale 0 holds every moment of 1..16 clips; each further scale doubles the stride and adds up to 8
    lengths, until a moment spans the whole video. The last scale keeps only layers that still fit, so
    for N off that grid the longest moments may be missing (N = 100: at most 96 clips).
    """
    if num_clips <= SHORT_SPAN_LAYERS:
        return [num_clips]
    layers = [SHORT_SPAN_LAYERS]
    while True:
        added = sparse_map_diagonals(num_clips, layers + [LONG_SPAN_LAYERS], check=False)[sum(layers):]
        fitting = [d for d in added if d.count > 0]
        if fitting:
            layers.append(len(fitting))
        if len(fitting) < LONG_SPAN_LAYERS or fitting[-1].offset >= num_clips - 1:
            return layers


@dataclass(frozen=True)
class MapDiagonal:
    """The cells one proposal layer fills: (k * stride, k * stride + offset) for k < count."""

    stride: int
    offset: int  # end clip - start clip
    count: int


def sparse_map_diagonals(num_clips: int, scale_layers: list[int], check: bool = True) -> list[MapDiagonal]:
    """One diagonal per proposal layer, in layer order (2D-TAN's scale rule).

    Scale 0, layer i: stride 1, offset i. The first layer of each later scale pools 3 cells at stride 2
    (stride doubles, offset grows by twice the old stride); every other layer widens by one step
    (offset grows by the stride).
    """
    diagonals, stride, offset = [], 1, 0
    for scale, num_layers in enumerate(scale_layers):
        for layer in range(num_layers):
            if scale > 0 and layer == 0:
                offset, stride = offset + 2 * stride, 2 * stride
            elif layer > 0:
                offset += stride
            count = max(0, -(-(num_clips - offset) // stride))
            diagonals.append(MapDiagonal(stride, offset, count))
    if check and any(d.count == 0 for d in diagonals):
        raise TalInputError(f"model.scale_layers={scale_layers} reach moments longer than num_clips={num_clips}; "
                            f"use {default_scale_layers(num_clips)} (the default)")
    return diagonals


def cell_indices(num_clips: int, diagonals: list[MapDiagonal]) -> torch.Tensor:
    """Flat index (start * N + end) of every valid cell, diagonal by diagonal: [num_valid] long."""
    parts = []
    for d in diagonals:
        starts = torch.arange(d.count) * d.stride
        parts.append(starts * num_clips + starts + d.offset)
    return torch.cat(parts)


def sparse_map_mask(num_clips: int, scale_layers: list[int] | None = None) -> torch.Tensor:
    """Valid cells of the sparse 2D map: [N, N] bool (136, 1104, 2548 cells for N = 16, 64, 128)."""
    scale_layers = default_scale_layers(num_clips) if scale_layers is None else scale_layers
    mask = torch.zeros(num_clips * num_clips, dtype=torch.bool)
    mask[cell_indices(num_clips, sparse_map_diagonals(num_clips, scale_layers))] = True
    return mask.view(num_clips, num_clips)


def iou_target_map(segments_s: torch.Tensor, durations_s: torch.Tensor, num_clips: int) -> torch.Tensor:
    """IoU of every cell (i, j) = [i, j + 1] * duration / N with the ground truth: [B, 2], [B] -> [B, N, N].

    Cells with j < i get 0. 2D-TAN first clips the ground truth to [0, duration]: the dataset's job.
    """
    segments_s = torch.as_tensor(segments_s, dtype=torch.float64)
    durations_s = torch.as_tensor(durations_s, dtype=torch.float64)
    steps = torch.arange(num_clips + 1, dtype=torch.float64) / num_clips  # [N + 1] fraction of the video
    cells = torch.stack(torch.broadcast_tensors(steps[:-1, None], steps[None, 1:]), dim=-1)  # [N, N, 2]
    cells = cells[None] * durations_s[:, None, None, None]  # [B, N, N, 2]
    overlap = tiou(cells, segments_s[:, None, None, :])  # [B, N, N]
    return (overlap * torch.ones(num_clips, num_clips, dtype=torch.bool).triu()).float()


def scaled_iou_targets(iou: torch.Tensor, min_iou: float, max_iou: float, bias: float = 0.0) -> torch.Tensor:
    """2D-TAN's soft labels: (iou - min_iou) / (max_iou - min_iou), scaled by (1 - bias), plus bias where
    positive, clipped to [0, 1]."""
    target = (iou - min_iou) * (1 - bias) / (max_iou - min_iou)
    return torch.where(target > 0, target + bias, target).clamp(0.0, 1.0)


def scaled_iou_bce(logits: torch.Tensor, iou: torch.Tensor, mask: torch.Tensor, min_iou: float, max_iou: float,
                   bias: float = 0.0) -> torch.Tensor:
    """Binary cross-entropy of the valid cells' scores against their scaled IoU, averaged over all valid
    cells of the batch (2D-TAN's sum / sum(mask)). logits, iou [B, N, N]; mask [N, N] bool."""
    target = scaled_iou_targets(iou[:, mask], min_iou, max_iou, bias)  # [B, num_valid]
    return F.binary_cross_entropy_with_logits(logits[:, mask], target)


def _sorted_candidates(score_map: torch.Tensor, valid_mask: torch.Tensor | None):
    """Candidate cells of each map, best first: (start clip, end clip + 1) [B, M, 2] float64, scores [B, M]."""
    num_clips = score_map.shape[-1]
    if valid_mask is None:
        valid_mask = torch.ones(num_clips, num_clips, dtype=torch.bool, device=score_map.device).triu()
    starts, ends = valid_mask.to(score_map.device).nonzero(as_tuple=True)  # [M]
    scores, order = score_map[:, starts, ends].sort(dim=1, descending=True, stable=True)  # [B, M]
    clips = torch.stack([starts[order], ends[order] + 1], dim=-1).double()  # [B, M, 2]
    return clips, scores


@single_threaded
def decode_moments(score_map: torch.Tensor, durations, nms_threshold: float | None, top_k: int | None,
                   valid_mask: torch.Tensor | None = None) -> list[list[tuple[float, float, float]]]:
    """Score maps [B, N, N] and durations [B] (s) -> per query, up to top_k (start_s, end_s, score), best first.

    2D-TAN's protocol (moment_localization/train.py, lib/core/eval.py): every cell with start <= end
    (or only `valid_mask` cells) is ranked by score, cell (i, j) becomes [i, j + 1] * duration / N
    seconds, and greedy NMS at `nms_threshold` (`tal.ops.ranked_nms`) over that whole ranked list keeps
    the first top_k survivors (top_k None or <= 0: all). The evaluator then ranks these moments as they
    are: this is the pipeline's only NMS. Overlaps are taken in float64 on the seconds written out
    (2D-TAN: on float32 seconds), so re-running the evaluator's NMS on them keeps every moment.
    Passing the model's mask gives the same moments unless fewer than top_k valid cells survive NMS
    (2D-TAN would then append invalid cells, scored 0).
    """
    clips, scores = _sorted_candidates(score_map.detach().float(), valid_mask)  # [B, M, 2], [B, M]
    durations_s = torch.as_tensor(durations, dtype=torch.float64, device=clips.device).flatten()  # [B]
    moments_s = clips * (durations_s / score_map.shape[-1])[:, None, None]  # [B, M, 2]
    return kept_moments(moments_s, scores, ranked_nms(moments_s, None, nms_threshold, top_k))


class SparsePropPool(nn.Module):
    """Cell feature = max over the clips it spans, for the valid cells only: [B, C, N] -> [B, C, N, N].

    Equal to 2D-TAN's SparsePropMaxPool (its stacked max-pools compute exactly these span maxima).
    """

    def __init__(self, num_clips: int, diagonals: list[MapDiagonal]):
        super().__init__()
        self.num_clips, self.diagonals = num_clips, diagonals
        self.by_offset = {d.offset: d for d in diagonals}  # offsets grow layer by layer, so this is layer order
        self.register_buffer("cells", cell_indices(num_clips, diagonals), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = []
        for offset, span_max in enumerate(iter_span_max(x, max(self.by_offset))):  # [B, C, N - offset]
            d = self.by_offset.get(offset)
            if d is not None:
                values.append(span_max[..., :: d.stride][..., : d.count])
        return _scatter_cells(torch.cat(values, dim=-1), self.cells, self.num_clips)


class SparsePropConv(nn.Module):
    """Cell features from stacked 1D convs, one layer per diagonal (2D-TAN's SparsePropConv).

    Scale 0 starts with a 1x1 conv, later scales with a kernel-3 stride-2 conv, every other layer is a
    kernel-2 conv; as in the official code there is no nonlinearity between them. [B, C, N] -> [B, C, N, N].
    """

    def __init__(self, num_clips: int, diagonals: list[MapDiagonal], scale_layers: list[int], dim: int):
        super().__init__()
        self.num_clips, self.diagonals = num_clips, diagonals
        self.layers = nn.ModuleList()
        length = num_clips
        for scale, num_layers in enumerate(scale_layers):
            for layer in range(num_layers):
                if layer == 0:
                    kernel, stride = (1, 1) if scale == 0 else (3, 2)
                else:
                    kernel, stride = 2, 1
                length = (length - kernel) // stride + 1
                if length < diagonals[len(self.layers)].count:
                    raise TalInputError(f"model.scale_layers={scale_layers} do not fit num_clips={num_clips}")
                self.layers.append(nn.Conv1d(dim, dim, kernel, stride))
        self.register_buffer("cells", cell_indices(num_clips, diagonals), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = []
        for layer, d in zip(self.layers, self.diagonals):
            x = layer(x)
            values.append(x[..., : d.count])
        return _scatter_cells(torch.cat(values, dim=-1), self.cells, self.num_clips)


def _scatter_cells(values: torch.Tensor, cells: torch.Tensor, num_clips: int) -> torch.Tensor:
    """values [B, C, num_valid] -> map [B, C, N, N] with zeros off the valid cells."""
    out = values.new_zeros(*values.shape[:2], num_clips * num_clips)
    out[..., cells] = values
    return out.view(*values.shape[:2], num_clips, num_clips)


class Tan2D(nn.Module):
    """2D Temporal Adjacent Network; see the module docstring for the batch contract."""

    def __init__(self, input_dim: int, num_clips: int = 16, frame_stride: int = 1, hidden_dim: int = 512,
                 prop: str = "pool", scale_layers: list[int] | None = None, map_kernel: int = 5, map_layers: int = 8,
                 min_iou: float = 0.5, max_iou: float = 1.0, bias: float = 0.0, text: dict | None = None,
                 vocab: Vocabulary | list[str] | int | None = None, map_conv_plan: str = "auto"):
        super().__init__()
        self.num_clips, self.frame_stride = num_clips, frame_stride
        self.min_iou, self.max_iou, self.bias = min_iou, max_iou, bias
        self.scale_layers = default_scale_layers(num_clips) if scale_layers is None else list(scale_layers)
        diagonals = sparse_map_diagonals(num_clips, self.scale_layers)
        mask = sparse_map_mask(num_clips, self.scale_layers)
        self.register_buffer("mask", mask, persistent=False)  # [N, N] bool

        self.frame = TemporalConvPool(input_dim, hidden_dim, kernel_size=1, pool_stride=frame_stride)
        if prop == "pool":
            self.prop = SparsePropPool(num_clips, diagonals)
        elif prop == "conv":
            self.prop = SparsePropConv(num_clips, diagonals, self.scale_layers, hidden_dim)
        else:
            raise TalInputError(f"model.prop must be 'pool' or 'conv', got {prop!r}")
        self.text = build_text_encoder(text or {}, vocab)
        self.text_proj = nn.Linear(self.text.out_dim, hidden_dim)
        self.map_proj = nn.Conv2d(hidden_dim, hidden_dim, 1)
        self.map_conv = MaskedMapConv(mask, hidden_dim, hidden_dim, map_kernel, map_layers, check_plan(map_conv_plan))
        self.score = nn.Conv2d(hidden_dim, 1, 1)

    def logits(self, batch: dict) -> torch.Tensor:
        """Raw scores [B, N, N], 0 off the valid cells."""
        features = batch["features"]  # [V, N * frame_stride, D]
        expected = self.num_clips * self.frame_stride
        if features.shape[1] != expected:
            raise ValueError(f"features have {features.shape[1]} steps, 2D-TAN expects num_clips * frame_stride = "
                             f"{expected} (average_to_num_clips)")
        clips = self.frame(features.transpose(1, 2))  # [V, C, N]
        cells = self.map_conv.cells  # the valid cells, row-major: the map conv's own order
        cell_values = self.prop(clips).flatten(2).index_select(2, cells)  # [V, C, n]
        cell_values = self.map_proj(cell_values[..., None])[..., 0]  # the 1x1 conv on the valid cells only
        if batch.get("video_index") is not None:
            cell_values = cell_values[batch["video_index"].to(features.device)]  # [B, C, n]
        sentence = self.text_proj(self.text(batch).to(features.device))  # [B, C]
        fused = F.normalize(cell_values.permute(2, 0, 1) * sentence, dim=-1)  # [n, B, C]
        out = self.map_conv.forward_cells(fused)  # [n, B, C]
        weight, bias = self.score.weight.view(1, -1), self.score.bias  # the 1x1 score conv
        scores = F.linear(out, weight.to(out.dtype), bias.to(out.dtype))[..., 0]  # [n, B]
        logits = scores.new_zeros(scores.shape[1], self.num_clips * self.num_clips)
        logits[:, cells] = scores.T
        return logits.view(-1, self.num_clips, self.num_clips)  # [B, N, N]

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        iou = batch.get("iou_targets")
        if iou is None:
            iou = iou_target_map(batch["segment"], batch["duration"], self.num_clips).to(batch["features"].device)
        loss = scaled_iou_bce(self.logits(batch), iou, self.mask, self.min_iou, self.max_iou, self.bias)
        return {"loss": loss, "loss_bce": loss.detach()}

    @torch.no_grad()
    def predict(self, batch: dict) -> torch.Tensor:
        """Score maps [B, N, N]: sigmoid on the valid cells, 0 elsewhere."""
        return torch.sigmoid(self.logits(batch)) * self.mask

    def decode(self, score_map: torch.Tensor, durations_s, nms_threshold: float | None = 0.5,
               top_k: int | None = 5) -> list[list[tuple[float, float, float]]]:
        """`decode_moments` over this model's valid cells."""
        return decode_moments(score_map, durations_s, nms_threshold, top_k, valid_mask=self.mask)

    def prepare_text(self, sentences: list[str]) -> dict[str, torch.Tensor]:
        """The text entries of a batch for these sentences."""
        return self.text.prepare(sentences)


MODEL_KEYS = {"input_dim", "num_clips", "frame_stride", "hidden_dim", "prop", "scale_layers", "map_kernel",
              "map_layers", "map_conv_plan", "loss", "text"}
LOSS_KEYS = {"min_iou", "max_iou", "bias"}


@MODELS.register("2dtan")
def build_tan2d(cfg: dict, vocab: Vocabulary | list[str] | int | None = None) -> Tan2D:
    """A Tan2D from the `model` section of a config (keys: see MODEL_KEYS; `name`/`type` are ignored).

    `loss` holds min_iou / max_iou / bias; `text` the sentence encoder (tal.models.text.build_text_encoder).
    """
    cfg = model_section(cfg, "2dtan", MODEL_KEYS, sections={"loss": LOSS_KEYS})
    loss = dict(cfg.pop("loss", None) or {})
    return Tan2D(**cfg, **loss, vocab=vocab)
