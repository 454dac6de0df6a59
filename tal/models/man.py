"""MAN: Moment Alignment Network with iterative graph adjustment (Zhang et al., CVPR 2019, arXiv 1812.00087).

Three parts, as in the paper's Figure 2:
- Language encoder: word vectors -> single-layer LSTM -> sentence vector s (`tal.models.text`), turned
  into dynamic filters by a linear layer and tanh: video filters [num_filters, d, filter_width] and
  scoring filters [num_filters, d] per sentence.
- Single-shot video encoder: clip features -> 1x1 conv + ReLU (d channels) -> the video filters are
  convolved with them (one grouped conv for the batch, `tal.models.layers.dynamic_conv1d`); the response
  map, lifted back to d channels by a 1x1 conv, multiplies the clip features (the figure's "x") ->
  average pooling by `frame_stride` -> f_v^1, N clips. A stack of unpadded convs (each with its own
  kernel and stride, + ReLU) makes f_v^2 ... f_v^K. Every cell of every map is one candidate moment:
  its receptive field, [p * jump, p * jump + field) clips. With kernel-2 stride-1 convs the maps hold
  every moment of 1..N clips (N = 6: DiDeMo's 21 moments); the default schedule (`default_layers`)
  follows 2D-TAN's sparse rule, so the candidates are exactly 2D-TAN's valid cells (136 / 1104 / 2548
  for N = 16 / 64 / 128). `anchor_ratios` puts several widths on each cell (SSD-style default spans,
  centred on the receptive field, clipped to the video); the default (1.0,) is one moment per cell.
- Iterative Graph Adjustment Network (IGAN): the candidates are the nodes of a fully connected graph.
  Initial relation R_0 = (M_0 W_q)(M_0 W_k)^T / sqrt(d) + lambda * tIoU(i, j) (feature similarity plus
  a learned weight on temporal overlap); then `num_iterations` applications of one IGAN cell:
  R_t = R_{t-1} + (M U)(M V)^T / sqrt(d) (the adjustment), A_t = row-softmax(R_t),
  M_t = M_{t-1} + ReLU(A_t M_{t-1} W) (residual graph convolution).
  The alignment score of node i is w . tanh-filters(s) m_i / sqrt(d) + b (the scoring filters applied
  to the final node features, the figure's second "*").

Training: binary cross-entropy of each candidate's score against its tIoU with the ground truth,
optionally rescaled as 2D-TAN does (`loss.min_iou`, `loss.max_iou`, `loss.bias`; default raw tIoU).
MAN retrieves moments by score alone: no boundary regression. Inference: sigmoid scores, candidates
scaled to seconds by duration / N, one greedy NMS over the whole ranked list (`tal.ops.ranked_nms`,
2D-TAN's rule), top_k.

What the paper leaves open, and how it is settled here (no official code was released; the public
repository dazhang-cv/MAN holds only a README and the overview figure):
- Filters: the paper makes one filter per word from the LSTM's word states with a 1D conv; tal's text
  encoders give one sentence vector (and MiniLM has no word states), so `num_filters` filters of width
  `filter_width` are generated from it. How the response is combined with the features is drawn, not
  written: here the response is lifted to d channels and multiplies the features; responses are
  scaled by 1 / sqrt(fan-in) to keep them O(1).
- Conv schedule, nonlinearity (ReLU here), anchor widths: not given for Charades-STA; see above.
- IGAN equations are re-derived from the description (learned initial graph, iterative adjustment of
  the adjacency, residual graph convolution, 3 iterations); one cell is shared by all iterations, as
  the figure's chain of identical cells suggests; the tIoU prior is our reading of "temporal relations".
- Loss: BCE against tIoU soft labels (rather than a ranking loss).

Batch contract (dict; B queries), as 2D-TAN's:
- "features": float [V, N * frame_stride, D], the videos averaged to that many clips
  (`tal.models.layers.average_to_num_clips`), and "video_index" long [B], the row each query is about
  (optional when V = B); MAN conditions its video encoder on the sentence, so it expands them first;
- text, from `model.prepare_text(sentences)`: "words" + "word_mask" (LSTM) or "sentence_vectors" (minilm);
- "duration": [B] seconds;
- "segment": float [B, 2], the ground truth (start_s, end_s), for `forward`.
`forward(batch)` returns {"loss": scalar, "loss_bce": detached copy}; `predict(batch)` returns scores
[B, num_candidates] (sigmoid), for the candidates `model.candidates` [num_candidates, 2] (clips);
`decode(scores, durations_s, ...)` turns them into ranked (start_s, end_s, score) per query.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tal.errors import TalInputError
from tal.models.layers import TemporalConvPool, dynamic_conv1d
from tal.models.tan2d import default_scale_layers, scaled_iou_targets
from tal.models.text import Vocabulary, build_text_encoder
from tal.ops.ranked_nms import kept_moments, ranked_nms
from tal.ops.segments import pairwise_tiou, tiou
from tal.ops.threads import single_threaded
from tal.registry import MODELS, model_section


def default_layers(num_clips: int) -> list[tuple[int, int]]:
    """(kernel, stride) of each conv after f_v^1 whose receptive fields are 2D-TAN's sparse-map cells.

    Scale 0: kernel-2 stride-1 convs up to 16 clips (every moment of 1..min(N, 16) clips); each further
    scale starts with a kernel-3 stride-2 conv, then kernel-2 stride-1 convs (2D-TAN's conv variant).
    """
    scale_layers = default_scale_layers(num_clips)
    layers = [(2, 1)] * (scale_layers[0] - 1)
    for count in scale_layers[1:]:
        layers += [(3, 2)] + [(2, 1)] * (count - 1)
    return layers


@dataclass(frozen=True)
class MapGeometry:
    """One feature map of the hierarchy: cell p covers clips [p * jump, p * jump + field)."""

    count: int
    jump: int
    field: int


def map_geometry(num_clips: int, layers: list[tuple[int, int]]) -> list[MapGeometry]:
    """Length, jump and receptive field of f_v^1 (the clips) and of each unpadded conv after it."""
    maps = [MapGeometry(num_clips, 1, 1)]
    for layer in layers:
        if len(layer) != 2:
            raise TalInputError(f"model.layers entries are [kernel, stride], got {list(layer)}")
        kernel, stride = (int(x) for x in layer)
        last = maps[-1]
        count = (last.count - kernel) // stride + 1
        if kernel < 1 or stride < 1 or count < 1:
            raise TalInputError(f"model.layers={[list(x) for x in layers]} do not fit num_clips={num_clips} "
                                f"(a conv of kernel {kernel}, stride {stride} gets {last.count} cells); "
                                f"use fewer layers or the default for this num_clips")
        maps.append(MapGeometry(count, last.jump * stride, last.field + (kernel - 1) * last.jump))
    return maps


def candidate_moments(num_clips: int, layers: list[tuple[int, int]],
                      anchor_ratios: tuple[float, ...] = (1.0,)) -> torch.Tensor:
    """Candidate moments [num_maps_cells * R, 2] (start, end) in clips, in order map, cell, ratio.

    Ratio r gives the span of width r * field centred on the cell's receptive field, clipped to [0, N].
    """
    parts = []
    ratios = torch.as_tensor(anchor_ratios, dtype=torch.float64)  # [R]
    for g in map_geometry(num_clips, layers):
        centre = torch.arange(g.count, dtype=torch.float64) * g.jump + g.field / 2  # [P]
        half = ratios * g.field / 2  # [R]
        spans = torch.stack([centre[:, None] - half, centre[:, None] + half], dim=-1)  # [P, R, 2]
        parts.append(spans.reshape(-1, 2))
    return torch.cat(parts).clamp(0.0, float(num_clips)).float()


def candidate_iou(candidates: torch.Tensor, segments_s: torch.Tensor, durations_s: torch.Tensor,
                  num_clips: int) -> torch.Tensor:
    """tIoU of every candidate with each query's ground truth: [n, 2] clips, [B, 2] s, [B] s -> [B, n]."""
    segments_s = torch.as_tensor(segments_s, dtype=torch.float64, device=candidates.device)
    durations_s = torch.as_tensor(durations_s, dtype=torch.float64, device=candidates.device)
    candidates_s = candidates.double()[None] * (durations_s / num_clips)[:, None, None]  # [B, n, 2]
    return tiou(candidates_s, segments_s[:, None, :]).float()


@single_threaded
def decode_candidates(scores: torch.Tensor, candidates: torch.Tensor, durations_s, num_clips: int,
                      nms_threshold: float | None, top_k: int | None) -> list[list[tuple[float, float, float]]]:
    """Scores [B, n] of candidates [n, 2] (clips) -> per query, up to top_k (start_s, end_s, score), best first.

    As 2D-TAN decodes its map (`tal.models.tan2d.decode_moments`): all candidates ranked by score (ties
    by candidate order), scaled to seconds by duration / N, one greedy NMS over the whole ranked list
    (`tal.ops.ranked_nms`), the first top_k survivors kept (top_k None or <= 0: every survivor).
    """
    scores, order = scores.detach().float().sort(dim=1, descending=True, stable=True)  # [B, n]
    durations_s = torch.as_tensor(durations_s, dtype=torch.float64, device=scores.device).flatten()  # [B]
    spans_s = candidates.to(scores.device).double()[order] * (durations_s / num_clips)[:, None, None]  # [B, n, 2]
    return kept_moments(spans_s, scores, ranked_nms(spans_s, None, nms_threshold, top_k))


class IGANCell(nn.Module):
    """One graph adjustment step: relation += (M U)(M V)^T / sqrt(d); A = row-softmax; M += ReLU(A M W)."""

    def __init__(self, dim: int):
        super().__init__()
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.update = nn.Linear(dim, dim)

    def forward(self, nodes: torch.Tensor, relation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """nodes [B, n, d], relation [B, n, n] -> (nodes, relation, adjacency [B, n, n], rows summing to 1)."""
        scale = 1.0 / math.sqrt(nodes.shape[-1])
        relation = relation + self.query(nodes) @ self.key(nodes).transpose(1, 2) * scale
        adjacency = torch.softmax(relation, dim=-1)
        nodes = nodes + F.relu(adjacency @ self.update(nodes))
        return nodes, relation, adjacency


class IGAN(nn.Module):
    """Iterative Graph Adjustment Network over candidate moments (see the module docstring)."""

    def __init__(self, dim: int, num_iterations: int = 3, temporal_prior: bool = True):
        super().__init__()
        if num_iterations < 0:
            raise TalInputError(f"model.num_iterations must be >= 0, got {num_iterations}")
        self.num_iterations = num_iterations
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.prior_weight = nn.Parameter(torch.tensor(1.0)) if temporal_prior else None
        self.cell = IGANCell(dim)

    def forward(self, nodes: torch.Tensor, overlap: torch.Tensor,
                return_adjacency: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """nodes [B, n, d], overlap [n, n] (tIoU of the candidates) -> nodes [B, n, d] (and A_0 .. A_T)."""
        relation = self.query(nodes) @ self.key(nodes).transpose(1, 2) / math.sqrt(nodes.shape[-1])  # [B, n, n]
        if self.prior_weight is not None:
            relation = relation + self.prior_weight * overlap.to(relation.dtype)
        adjacency = [torch.softmax(relation, dim=-1)] if return_adjacency else []
        for _ in range(self.num_iterations):
            nodes, relation, step = self.cell(nodes, relation)
            if return_adjacency:
                adjacency.append(step)
        return (nodes, adjacency) if return_adjacency else nodes


class MAN(nn.Module):
    """Moment Alignment Network; see the module docstring for the parts and the batch contract."""

    def __init__(self, input_dim: int, num_clips: int = 16, frame_stride: int = 1, hidden_dim: int = 512,
                 num_filters: int = 8, filter_width: int = 3, layers: list | None = None,
                 anchor_ratios: list[float] | tuple[float, ...] = (1.0,), num_iterations: int = 3,
                 temporal_prior: bool = True, min_iou: float = 0.0, max_iou: float = 1.0, bias: float = 0.0,
                 text: dict | None = None, vocab: Vocabulary | list[str] | int | None = None):
        super().__init__()
        if filter_width < 1 or filter_width % 2 == 0:
            raise TalInputError(f"model.filter_width must be odd (the response keeps the clip count), got {filter_width}")
        if num_filters < 1 or not anchor_ratios or any(r <= 0 for r in anchor_ratios):
            raise TalInputError(f"model.num_filters must be >= 1 and model.anchor_ratios positive, got "
                                f"{num_filters} and {list(anchor_ratios)}")
        self.num_clips, self.frame_stride = num_clips, frame_stride
        self.min_iou, self.max_iou, self.bias = min_iou, max_iou, bias
        self.num_filters, self.filter_width, self.hidden_dim = num_filters, filter_width, hidden_dim
        self.layers = [tuple(x) for x in (default_layers(num_clips) if layers is None else layers)]
        self.anchor_ratios = tuple(float(r) for r in anchor_ratios)
        candidates = candidate_moments(num_clips, self.layers, self.anchor_ratios)
        self.register_buffer("candidates", candidates, persistent=False)  # [n, 2] clips
        self.register_buffer("overlap", pairwise_tiou(candidates, candidates), persistent=False)  # [n, n]

        self.text = build_text_encoder({"num_layers": 1, **(text or {})}, vocab)
        self.video_filters = nn.Linear(self.text.out_dim, num_filters * hidden_dim * filter_width)
        self.score_filters = nn.Linear(self.text.out_dim, num_filters * hidden_dim)
        self.frame = TemporalConvPool(input_dim, hidden_dim, kernel_size=1)
        self.lift = nn.Conv1d(num_filters, hidden_dim, 1)
        self.pool = nn.AvgPool1d(frame_stride, frame_stride) if frame_stride > 1 else nn.Identity()
        self.convs = nn.ModuleList(nn.Conv1d(hidden_dim, hidden_dim, k, s) for k, s in self.layers)
        num_ratios = len(self.anchor_ratios)
        self.ratio_embedding = nn.Parameter(torch.randn(num_ratios, hidden_dim) * 0.1) if num_ratios > 1 else None
        self.igan = IGAN(hidden_dim, num_iterations, temporal_prior)
        self.score = nn.Linear(num_filters, 1)

    def encode_video(self, features: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """Sentence-aligned node features [B, n, d] before the graph: features [B, T, D], sentence [B, S]."""
        expected = self.num_clips * self.frame_stride
        if features.shape[1] != expected:
            raise ValueError(f"features have {features.shape[1]} steps, MAN expects num_clips * frame_stride = "
                             f"{expected} (average_to_num_clips)")
        num_queries, dim, width = features.shape[0], self.hidden_dim, self.filter_width
        clips = self.frame(features.transpose(1, 2))  # [B, d, T]
        filters = torch.tanh(self.video_filters(sentence)).view(num_queries, self.num_filters, dim, width)
        response = dynamic_conv1d(clips, filters, padding=width // 2) / math.sqrt(dim * width)  # [B, F, T]
        maps = [self.pool(clips * self.lift(response))]  # f_v^1 [B, d, N]
        for conv in self.convs:
            maps.append(F.relu(conv(maps[-1])))  # f_v^k [B, d, count_k]
        nodes = torch.cat(maps, dim=-1).transpose(1, 2)  # [B, cells, d]
        if self.ratio_embedding is None:
            return nodes
        num_cells, num_ratios = nodes.shape[1], len(self.anchor_ratios)
        ratio = self.ratio_embedding.repeat(num_cells, 1)  # [cells * R, d]: ratio 0, 1, .., 0, 1, ..
        return nodes.repeat_interleave(num_ratios, dim=1) + ratio  # [B, n, d] in order cell, ratio

    def logits(self, batch: dict, return_adjacency: bool = False):
        """Alignment logits [B, n] (and the IGAN adjacency matrices A_0 .. A_T, each [B, n, n])."""
        features = batch["features"]
        if batch.get("video_index") is not None:
            features = features[batch["video_index"].to(features.device)]  # [B, T, D]
        sentence = self.text(batch).to(features.device)  # [B, S]
        nodes = self.encode_video(features, sentence)
        out = self.igan(nodes, self.overlap, return_adjacency=return_adjacency)
        nodes, adjacency = out if return_adjacency else (out, None)
        filters = torch.tanh(self.score_filters(sentence)).view(-1, self.num_filters, self.hidden_dim)  # [B, F, d]
        response = torch.einsum("bfd,bnd->bnf", filters, nodes) / math.sqrt(self.hidden_dim)  # [B, n, F]
        logits = self.score(response)[..., 0]  # [B, n]
        return (logits, adjacency) if return_adjacency else logits

    def iou_targets(self, batch: dict) -> torch.Tensor:
        """tIoU [B, n] of every candidate with the query's "segment" (s), given "duration" (s)."""
        return candidate_iou(self.candidates, batch["segment"], batch["duration"], self.num_clips)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        target = scaled_iou_targets(self.iou_targets(batch), self.min_iou, self.max_iou, self.bias)  # [B, n]
        loss = F.binary_cross_entropy_with_logits(self.logits(batch), target.to(batch["features"].dtype))
        return {"loss": loss, "loss_bce": loss.detach()}

    @torch.no_grad()
    def predict(self, batch: dict) -> torch.Tensor:
        """Alignment scores [B, n] in (0, 1), one per row of `self.candidates`."""
        return torch.sigmoid(self.logits(batch))

    def decode(self, scores: torch.Tensor, durations_s, nms_threshold: float | None = 0.5,
               top_k: int | None = 5) -> list[list[tuple[float, float, float]]]:
        """`decode_candidates` over this model's candidates."""
        return decode_candidates(scores, self.candidates, durations_s, self.num_clips, nms_threshold, top_k)

    def prepare_text(self, sentences: list[str]) -> dict[str, torch.Tensor]:
        """The text entries of a batch for these sentences."""
        return self.text.prepare(sentences)


MODEL_KEYS = {"input_dim", "num_clips", "frame_stride", "hidden_dim", "num_filters", "filter_width", "layers",
              "anchor_ratios", "num_iterations", "temporal_prior", "loss", "text"}
LOSS_KEYS = {"min_iou", "max_iou", "bias"}


@MODELS.register("man")
def build_man(cfg: dict, vocab: Vocabulary | list[str] | int | None = None) -> MAN:
    """A MAN from the `model` section of a config (keys: MODEL_KEYS; `name`/`type` are ignored).

    `layers`: list of [kernel, stride] after the clip map (default: `default_layers(num_clips)`);
    `loss` holds min_iou / max_iou / bias; `text` the sentence encoder (single-layer LSTM by default).
    """
    cfg = model_section(cfg, "man", MODEL_KEYS, sections={"loss": LOSS_KEYS})
    loss = dict(cfg.pop("loss", None) or {})
    return MAN(**cfg, **loss, vocab=vocab)
