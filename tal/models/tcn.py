"""TCN: Temporal Context Network for activity localization (Dai et al., ICCV 2017).

Proposals sit at regular centres and several scales; each is ranked from features sampled inside it
*and* inside a context window twice as long around the same centre, then the survivors of NMS are
classified.
- Proposals: centres every `centre_stride` feature steps starting at `centre_stride` (default
  base_length / 2, i.e. 50% overlap at the smallest scale); a centre is used while the smallest
  proposal fits in the video (c + base_length / 2 <= n; the first centre always). At each centre,
  `num_scales` proposals of lengths base_length * 2**k, clipped to the video [0, n]. The official
  ActivityNet setting is base = duration / 32 with 6 scales (1/32 .. 1 of the video): on a video
  rescaled to T steps that is base_length = T / 32.
- Context: the window of `context_ratio` (2) times the clipped proposal's length around its centre,
  not clipped; the part outside the video reads as zeros.
- Features: `num_samples` (12) points at the centres of equal parts of the proposal and of the context
  window, linearly interpolated over the feature sequence (`tal.models.layers.sample_segment_features`).
- Ranker (the official "pair" network): per window, a temporal conv of kernel 5 shared by all feature
  dimensions (a [5, 1] conv over [samples, D], `conv_channels` filters), ReLU, average pooling of 3
  (stride 1); the proposal and context outputs are concatenated (the two-level temporal pyramid), then
  two fully connected layers (500, then 2; no nonlinearity between them, as in the official prototxt)
  and a 2-way softmax, trained with cross-entropy (not a pairwise ranking loss): score = P(action).
- Labels (per centre, as the official sampler): a centre whose best proposal has tIoU > 0.7 with a
  ground truth is positive: its best scale is a positive, its other scales are "scale negatives";
  a centre whose proposals all have tIoU < 0.3 gives hard negatives at every scale; other centres are
  ignored. Per video, up to 32 of each kind are drawn at random for the ranker; the classifier draws
  its own (`cls_samples_per_video`, default 32 positives and 1 of each negative kind: the official
  960 : 32 : 32 per batch of 1024, so 94% of its targets are actions).
- Classifier (the paper's single-window variant of the ranker): the same conv + pool on the proposal's
  samples alone, two fully connected layers (`cls_hidden_dim`, then num_classes + 1), softmax over
  classes with 0 = background. Its target on every sampled proposal is the class of the ground truth
  it overlaps most when that tIoU >= class_tiou[scale] (official: 0.4, 0.45, 0.5, 0.55, 0.6, 0.7
  from the shortest scale up), else background; hard negatives are background.
- Loss: cross-entropy of the ranker + cross-entropy of the classifier, on the same sampled proposals
  (`loss_weights`, default 1 and 1). The two nets share no parameter, so training them jointly only
  differs from the official two separate trainings in sharing one optimiser and one set of samples.
- Inference: every proposal is ranked; class-agnostic NMS (`proposal_nms`, official: tIoU 0.45, 20
  kept); the kept ones are classified; each gets its `classes_per_proposal` best foreground classes
  and is dropped when background is its most likely class (`drop_background`); it scores its ranking
  score (`detection_score: rank`, the official evaluate.py) or ranking x class probability
  (`rank_x_class`); per-class NMS (`nms`, official: tIoU 1, i.e. none, and 20 kept) gives the
  detections. With video-level class scores in the
  batch ("video_scores" [B, C], from `dataset.classification`) they are added to the classifier's
  probabilities before the argmax, as the official classify_proposal adds its video-level priors.

Deviations from the official code (github.com/vdavid70619/TCN), on purpose: features are interpolated
at fixed points (official: nearest of the features inside the window, zero rows for the outside part);
the last centre whose smallest proposal ends exactly at the video end is kept (official `np.arange`
drops it); NMS uses tal's tIoU (official adds 1 to lengths); the classifier is the paper's temporal
conv net over the proposal (official: bilinear pooling F^T F of all features inside, plus video-level
class scores from separate classifiers, here `dataset.classification`); sample counts are per video
(official: per batch of 1024, 512 positives and 256 of each negative kind for the ranker, 960
positives and 32 of each negative kind for the classifier; tal keeps the classifier's ratio per video).

Units: segments are [start, end] in feature steps, feature i spanning [i, i + 1).

Batch contract (dict, B videos):
- "features": float [B, T, D];
- "mask": bool [B, T], True on the valid steps, which come first (padding after them);
- "segments": list of B float tensors [N_i, 2], ground truth in feature steps (training only);
- "labels": list of B long tensors [N_i], class indices in [0, num_classes) (training only).
`forward(batch)` returns {"loss": weighted total, "loss_rank", "loss_cls": each unweighted part, detached};
`predict(batch)` returns, per video, (segments [K, 2] in feature steps, scores [K], labels [K]) sorted by
score, highest first, after NMS.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tal.errors import TalInputError
from tal.models.a2net import pad_ground_truth
from tal.models.anchors import match_segments
from tal.models.layers import sample_segment_features
from tal.models.targets import class_targets, label_distributions
from tal.ops.nms import postprocess_detections
from tal.registry import MODELS, model_section

OFFICIAL_CLASS_TIOU = (0.4, 0.45, 0.5, 0.55, 0.6, 0.7)
IGNORED, POSITIVE, SCALE_NEGATIVE, HARD_NEGATIVE = 0, 1, 2, 3
KIND_NAMES = {"positive": POSITIVE, "scale_negative": SCALE_NEGATIVE, "hard_negative": HARD_NEGATIVE}
OFFICIAL_SAMPLES_PER_VIDEO = {"positive": 32, "scale_negative": 32, "hard_negative": 32}
# The classifier's draw: the official train_proposal_class2.py (load_data) fills a batch of 1024 with 32 scale
# negatives, 32 hard negatives and 960 positives (at most 32 a video): 94% positives; per video that is 32 : 1 : 1.
OFFICIAL_CLS_SAMPLES_PER_VIDEO = {"positive": 32, "scale_negative": 1, "hard_negative": 1}
DETECTION_SCORES = ("rank", "rank_x_class")
LOSS_WEIGHTS = {"rank": 1.0, "cls": 1.0}
OFFICIAL_PROPOSAL_NMS = {"method": "hard", "iou_threshold": 0.45, "max_detections": 20}
OFFICIAL_NMS = {"method": "hard", "iou_threshold": 1.0, "max_detections": 20}  # evaluate.py: nms_thor=1, topK=20
RANK_CHUNK = 2048  # proposals ranked at once at inference (their samples take 2 * 12 * D floats each)
NMS_KEYS = {"method", "iou_threshold", "sigma", "score_threshold", "pre_nms_top_k", "max_detections", "class_agnostic",
            "voting_threshold", "voting_weight"}  # tal.ops.nms.postprocess_detections


def proposal_centres(num_steps: int, base_length: float, centre_stride: float) -> torch.Tensor:
    """Centres [J] in feature steps: stride, 2 * stride, ... while the smallest proposal fits (the first one always)."""
    count = int((num_steps - base_length / 2) / centre_stride + 1e-6)
    return (torch.arange(max(count, 1), dtype=torch.float32) + 1) * centre_stride


def tcn_proposals(num_valid: torch.Tensor, num_steps: int, base_length: float, num_scales: int,
                  centre_stride: float, context_ratio: float = 2.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Proposals and their context windows for videos of num_valid [B] steps, padded to num_steps.

    -> proposals [B, J, K, 2] clipped to [0, n], contexts [B, J, K, 2] (context_ratio times the clipped
    length around its centre, unclipped), valid [B, J] bool (the centre is used for that video; the others
    hold zero-length proposals at the video end).
    """
    device = num_valid.device
    centres = proposal_centres(num_steps, base_length, centre_stride).to(device)  # [J]
    lengths = base_length * 2.0 ** torch.arange(num_scales, dtype=torch.float32, device=device)  # [K]
    n = num_valid.to(torch.float32)[:, None, None]  # [B, 1, 1]
    start = (centres[:, None] - lengths / 2).clamp(min=0.0)[None]  # [1, J, K]
    end = torch.minimum((centres[:, None] + lengths / 2)[None], n)  # [B, J, K]
    start = torch.minimum(start, end)  # only an unused centre past a short video's end: [n, n]
    proposals = torch.stack([start, end], dim=-1)  # [B, J, K, 2]
    middle, half = (start + end) / 2, (end - start) * context_ratio / 2
    contexts = torch.stack([middle - half, middle + half], dim=-1)  # [B, J, K, 2]
    valid = centres[None] + base_length / 2 <= n[..., 0] + 1e-6  # [B, J]
    valid[:, 0] = True
    return proposals, contexts, valid


def assign_proposals(proposals: torch.Tensor, valid: torch.Tensor, gt_segments: torch.Tensor, gt_labels: torch.Tensor,
                     gt_valid: torch.Tensor, pos_tiou: float, neg_tiou: float,
                     class_tiou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kind and class target of every proposal (the official TCN sampler's rules).

    proposals [B, J, K, 2], valid [B, J]; gt_segments [B, G, 2], gt_labels [B, G], gt_valid [B, G];
    class_tiou [K]. A centre whose best tIoU (over its scales and the ground truth) is > pos_tiou
    makes its best scale (the first on ties) POSITIVE and its other scales SCALE_NEGATIVE; a centre
    whose best tIoU is < neg_tiou makes all its scales HARD_NEGATIVE; the rest are IGNORED.
    Class target: 1 + the label of the ground truth a proposal overlaps most when that tIoU >=
    class_tiou[scale], else 0 (background); always 0 for hard negatives.
    -> kind [B, J, K] long, classes [B, J, K] long, index [B, J, K] long (the ground truth overlapped most).
    """
    batch, num_centres, num_scales, _ = proposals.shape
    best, index, _ = match_segments(proposals.reshape(batch, -1, 2), gt_segments, gt_valid, pos_tiou)  # [B, P] x2
    best = best.view(batch, num_centres, num_scales)  # [B, J, K]
    centre_best, best_scale = best.max(dim=-1)  # [B, J]
    positive_centre = valid & (centre_best > pos_tiou)  # [B, J]
    hard_centre = valid & (centre_best < neg_tiou)  # [B, J]
    is_best = F.one_hot(best_scale, num_scales).bool()  # [B, J, K]
    kind = torch.full_like(best_scale, IGNORED)[..., None].expand(-1, -1, num_scales).clone()  # [B, J, K]
    kind[positive_centre[..., None] & is_best] = POSITIVE
    kind[positive_centre[..., None] & ~is_best] = SCALE_NEGATIVE
    kind[hard_centre[..., None].expand_as(kind)] = HARD_NEGATIVE
    label = (gt_labels.gather(1, index) + 1).view(batch, num_centres, num_scales)  # [B, J, K]
    classes = torch.where(best >= class_tiou.to(best.device), label, torch.zeros_like(label))
    classes[kind == HARD_NEGATIVE] = 0
    return kind, classes, index.view(batch, num_centres, num_scales)


def sample_proposals(kind: torch.Tensor, counts: dict[int, int],
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw, per video, up to counts[k] proposals of each kind k uniformly: kind [B, P] -> selected [B, P] bool."""
    selected = torch.zeros_like(kind, dtype=torch.bool)
    for value, count in counts.items():
        if count <= 0 or kind.shape[1] == 0:
            continue
        keys = torch.rand(kind.shape, device=kind.device, generator=generator).masked_fill(kind != value, -1.0)
        top = keys.topk(min(count, kind.shape[1]), dim=1)  # [B, k]
        selected |= torch.zeros_like(selected).scatter_(1, top.indices, top.values >= 0)
    return selected


class TemporalConvBranch(nn.Module):
    """A temporal conv shared by every feature dimension, ReLU, stride-1 average pooling (TCN's per-window layer).

    The official Caffe layer is a [kernel_size, 1] conv over a [1, samples, D] blob, then AVE pooling
    [pool_size, 1] at stride 1. Both are linear maps along the samples, so they run here as two small
    banded matrices ([C * S1, S] built from `weight` [C, kernel_size] through a fixed shift tensor, and
    [S', S1] for the pooling) multiplying [N, S, D]: plain GEMMs, about 4x faster on CPU than Conv2d here.
    [N, S, D] sampled features -> [N, channels * S' * D], laid out [C, S', D]; S1 = S - kernel_size + 1,
    S' = S1 - pool_size + 1.
    """

    def __init__(self, num_samples: int, channels: int, kernel_size: int, pool_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.kaiming_uniform_(self.weight, a=1.0)  # Caffe's "xavier" filler: U(+-sqrt(3 / fan_in))
        conv_steps = num_samples - kernel_size + 1
        self.out_steps = conv_steps - pool_size + 1
        out, tap = torch.meshgrid(torch.arange(conv_steps), torch.arange(kernel_size), indexing="ij")
        shift = torch.zeros(conv_steps, kernel_size, num_samples)  # [S1, k, S]: 1 where s = i + tap
        shift[out, tap, out + tap] = 1.0
        out, tap = torch.meshgrid(torch.arange(self.out_steps), torch.arange(pool_size), indexing="ij")
        pool = torch.zeros(self.out_steps, conv_steps)  # [S', S1]
        pool[out, out + tap] = 1.0 / pool_size
        self.register_buffer("shift", shift, persistent=False)
        self.register_buffer("pool", pool, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels, conv_steps = self.weight.shape[0], self.shift.shape[0]
        conv = torch.einsum("ck,iks->cis", self.weight, self.shift).reshape(channels * conv_steps, -1)  # [C*S1, S]
        y = (conv @ x).view(x.shape[0], channels, conv_steps, x.shape[2])  # [N, C, S1, D]
        y = F.relu(y + self.bias[:, None, None])
        return (self.pool @ y).flatten(1)  # [N, C * S' * D]


class TCN(nn.Module):
    """Temporal Context Network detector; see the module docstring for the batch contract and units."""

    def __init__(self, input_dim: int, num_classes: int, base_length: float = 4.0, num_scales: int = 6,
                 centre_stride: float | None = None, context_ratio: float = 2.0, num_samples: int = 12,
                 conv_channels: int = 1, conv_kernel: int = 5, pool_kernel: int = 3, rank_hidden_dim: int = 500,
                 cls_hidden_dim: int = 2000, pos_tiou: float = 0.7, neg_tiou: float = 0.3,
                 class_tiou: float | list[float] | None = None, samples_per_video: dict | None = None,
                 cls_samples_per_video: dict | None = None, loss_weights: dict | None = None,
                 proposal_nms: dict | None = None, nms: dict | None = None, classes_per_proposal: int = 1,
                 drop_background: bool = True, detection_score: str = "rank"):
        super().__init__()
        self.num_classes, self.num_scales, self.num_samples = num_classes, num_scales, num_samples
        self.base_length, self.context_ratio = float(base_length), float(context_ratio)
        self.centre_stride = float(centre_stride) if centre_stride is not None else self.base_length / 2
        self.pos_tiou, self.neg_tiou = pos_tiou, neg_tiou
        self.samples_per_video = {**OFFICIAL_SAMPLES_PER_VIDEO, **(samples_per_video or {})}
        self.cls_samples_per_video = {**OFFICIAL_CLS_SAMPLES_PER_VIDEO, **(cls_samples_per_video or {})}
        if detection_score not in DETECTION_SCORES:
            raise TalInputError(f"model.detection_score must be one of {', '.join(DETECTION_SCORES)}, "
                                f"got {detection_score!r}")
        self.detection_score = detection_score
        self.loss_weights = {**LOSS_WEIGHTS, **(loss_weights or {})}
        self.proposal_nms = {**OFFICIAL_PROPOSAL_NMS, **(proposal_nms or {})}
        self.nms = {**OFFICIAL_NMS, **(nms or {})}
        self.classes_per_proposal, self.drop_background = classes_per_proposal, drop_background
        self._check(num_classes, conv_kernel, pool_kernel)
        self.register_buffer("class_tiou", _class_tiou(class_tiou, num_scales), persistent=False)  # [K]

        self.proposal_branch = TemporalConvBranch(num_samples, conv_channels, conv_kernel, pool_kernel)
        self.context_branch = TemporalConvBranch(num_samples, conv_channels, conv_kernel, pool_kernel)
        self.class_branch = TemporalConvBranch(num_samples, conv_channels, conv_kernel, pool_kernel)
        branch_dim = conv_channels * self.proposal_branch.out_steps * input_dim
        self.rank_head = nn.Sequential(nn.Linear(2 * branch_dim, rank_hidden_dim), nn.Linear(rank_hidden_dim, 2))
        self.class_head = nn.Sequential(nn.Linear(branch_dim, cls_hidden_dim),
                                        nn.Linear(cls_hidden_dim, num_classes + 1))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_uniform_(module.weight, a=1.0)  # Caffe's "xavier" filler: U(+-sqrt(3 / fan_in))
                nn.init.zeros_(module.bias)

    def _check(self, num_classes: int, conv_kernel: int, pool_kernel: int) -> None:
        if self.base_length <= 0 or self.centre_stride <= 0 or self.num_scales < 1:
            raise TalInputError(f"TCN needs model.base_length > 0, model.centre_stride > 0 and model.num_scales >= 1, "
                                f"got {self.base_length}, {self.centre_stride}, {self.num_scales}")
        if self.num_samples - conv_kernel - pool_kernel + 2 < 1:
            raise TalInputError(f"model.num_samples={self.num_samples} is too few for conv_kernel={conv_kernel} and "
                                f"pool_kernel={pool_kernel}; need at least {conv_kernel + pool_kernel - 1}")
        if not 0.0 <= self.neg_tiou <= self.pos_tiou <= 1.0:
            raise TalInputError(f"TCN needs 0 <= model.neg_tiou <= model.pos_tiou <= 1, "
                                f"got {self.neg_tiou}, {self.pos_tiou}")
        if not 1 <= self.classes_per_proposal <= num_classes:
            raise TalInputError(f"model.classes_per_proposal must be in [1, {num_classes}], "
                                f"got {self.classes_per_proposal}")
        for name, table, known in (("samples_per_video", self.samples_per_video, OFFICIAL_SAMPLES_PER_VIDEO),
                                   ("cls_samples_per_video", self.cls_samples_per_video, OFFICIAL_SAMPLES_PER_VIDEO),
                                   ("loss_weights", self.loss_weights, LOSS_WEIGHTS),
                                   ("proposal_nms", self.proposal_nms, NMS_KEYS), ("nms", self.nms, NMS_KEYS)):
            unknown = set(table) - set(known)
            if unknown:
                raise TalInputError(f"unknown model.{name} key(s) {sorted(unknown)}; known: {sorted(known)}")

    def proposals(self, num_valid: torch.Tensor, num_steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This model's `tcn_proposals`: proposals [B, J, K, 2], contexts [B, J, K, 2], valid centres [B, J]."""
        return tcn_proposals(num_valid, num_steps, self.base_length, self.num_scales, self.centre_stride,
                             self.context_ratio)

    def _samples(self, features: torch.Tensor, num_valid: torch.Tensor, video: torch.Tensor,
                 segments: torch.Tensor) -> torch.Tensor:
        return sample_segment_features(features, num_valid, video, segments, self.num_samples)  # [N, S, D]

    def rank_logits(self, proposal_samples: torch.Tensor, context_samples: torch.Tensor) -> torch.Tensor:
        """[N, S, D] proposal and context samples -> [N, 2] logits (index 1 = action)."""
        pair = torch.cat([self.proposal_branch(proposal_samples), self.context_branch(context_samples)], dim=1)
        return self.rank_head(pair)

    def class_logits(self, proposal_samples: torch.Tensor) -> torch.Tensor:
        """[N, S, D] proposal samples -> [N, num_classes + 1] logits (0 = background)."""
        return self.class_head(self.class_branch(proposal_samples))

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        features, mask = batch["features"], batch["mask"].bool()  # [B, T, D], [B, T]
        num_valid = mask.sum(dim=1)  # [B]
        proposals, contexts, valid = self.proposals(num_valid, features.shape[1])  # [B, J, K, 2] x2, [B, J]
        gt_segments, gt_labels, gt_valid = pad_ground_truth(batch["segments"], batch["labels"], features.device)
        kind, classes, matched = assign_proposals(proposals, valid, gt_segments, gt_labels, gt_valid,
                                                  self.pos_tiou, self.neg_tiou, self.class_tiou)  # [B, J, K] x3
        kind, classes = kind.flatten(1), classes.flatten(1)  # [B, P], P = J * K, centre-major
        soft = class_targets(label_distributions(gt_segments, gt_labels, gt_valid, self.num_classes),
                             matched.flatten(1), classes > 0)  # [B, P, C+1]
        proposals, contexts = proposals.flatten(1, 2), contexts.flatten(1, 2)  # [B, P, 2]
        counts = {KIND_NAMES[name]: count for name, count in self.samples_per_video.items()}
        video, index = sample_proposals(kind, counts).nonzero(as_tuple=True)  # [N] x2
        proposal_samples = self._samples(features, num_valid, video, proposals[video, index])  # [N, S, D]
        context_samples = self._samples(features, num_valid, video, contexts[video, index])  # [N, S, D]
        rank_target = (kind[video, index] == POSITIVE).long()  # [N]
        cls_counts = {KIND_NAMES[name]: count for name, count in self.cls_samples_per_video.items()}
        cls_video, cls_index = sample_proposals(kind, cls_counts).nonzero(as_tuple=True)  # [M] x2
        cls_samples = self._samples(features, num_valid, cls_video, proposals[cls_video, cls_index])  # [M, S, D]
        parts = {"rank": _cross_entropy(self.rank_logits(proposal_samples, context_samples), rank_target),
                 "cls": _cross_entropy(self.class_logits(cls_samples), soft[cls_video, cls_index])}
        total = sum(self.loss_weights[name] * value for name, value in parts.items())
        return {"loss": total, **{f"loss_{name}": value.detach() for name, value in parts.items()}}

    @torch.no_grad()
    def rank(self, batch: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per video: every proposal (segments [P_b, 2], ranking scores [P_b]) before NMS, in proposal order."""
        features, mask = batch["features"], batch["mask"].bool()
        num_valid = mask.sum(dim=1)
        proposals, contexts, valid = self.proposals(num_valid, features.shape[1])  # [B, J, K, 2] x2, [B, J]
        proposals, contexts = proposals.flatten(1, 2), contexts.flatten(1, 2)  # [B, P, 2]
        valid = valid[..., None].expand(-1, -1, self.num_scales).flatten(1)  # [B, P]
        video, index = valid.nonzero(as_tuple=True)  # [N] x2
        segments = proposals[video, index]  # [N, 2]
        windows = contexts[video, index]  # [N, 2]
        scores = [segments.new_zeros(0)]
        for chunk in torch.arange(len(video), device=video.device).split(RANK_CHUNK):  # bounded memory
            logits = self.rank_logits(self._samples(features, num_valid, video[chunk], segments[chunk]),
                                      self._samples(features, num_valid, video[chunk], windows[chunk]))  # [n, 2]
            scores.append(logits.softmax(dim=-1)[:, 1])
        scores = torch.cat(scores)  # [N]
        return [(segments[video == b], scores[video == b]) for b in range(features.shape[0])]

    @torch.no_grad()
    def predict(self, batch: dict) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per video: (segments [K, 2] in feature steps, scores [K], labels [K]), best first, after NMS."""
        features, mask = batch["features"], batch["mask"].bool()
        num_valid = mask.sum(dim=1)
        kept = [postprocess_detections(segments, scores, None, **self.proposal_nms)[:2] for segments, scores in
                self.rank(batch)]
        video = torch.cat([torch.full((len(s),), b, dtype=torch.long, device=features.device)
                           for b, (s, _) in enumerate(kept)])  # [M]
        segments = torch.cat([s for s, _ in kept])  # [M, 2]
        rank_scores = torch.cat([r for _, r in kept])  # [M]
        probs = self.class_logits(self._samples(features, num_valid, video, segments)).softmax(-1)  # [M, C+1]
        if batch.get("video_scores") is not None:  # official classify_proposal: prob + video-level priors
            probs = probs + F.pad(batch["video_scores"].to(probs.dtype), (1, 0))[video]  # [M, C+1]
        class_probs, labels = probs[:, 1:].topk(self.classes_per_proposal, dim=-1)  # [M, k]
        if self.detection_score == "rank":
            scores = rank_scores[:, None].expand_as(class_probs)  # [M, k], official: the ranking score
        else:
            scores = rank_scores[:, None] * class_probs  # [M, k]
        keep = probs.argmax(dim=-1) > 0 if self.drop_background else torch.ones_like(video, dtype=torch.bool)  # [M]
        outputs = []
        for b in range(features.shape[0]):
            mine = keep & (video == b)
            candidates = segments[mine][:, None].expand(-1, self.classes_per_proposal, 2).reshape(-1, 2)
            outputs.append(postprocess_detections(candidates, scores[mine].reshape(-1), labels[mine].reshape(-1),
                                                  **self.nms))
        return outputs


def _class_tiou(value: float | list[float] | None, num_scales: int) -> torch.Tensor:
    """class_tiou per scale: a list of num_scales, one number for all, or None for the official six."""
    if value is None:
        if num_scales != len(OFFICIAL_CLASS_TIOU):
            raise TalInputError(f"model.class_tiou needs one value per scale for num_scales={num_scales} (or one "
                                f"number for all); the official {list(OFFICIAL_CLASS_TIOU)} are for 6 scales")
        value = OFFICIAL_CLASS_TIOU
    if isinstance(value, (int, float)):
        value = [float(value)] * num_scales
    if len(value) != num_scales:
        raise TalInputError(f"model.class_tiou has {len(value)} values but model.num_scales is {num_scales}")
    return torch.tensor(value, dtype=torch.float32)


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy, or a zero that still belongs to the graph of `logits` when there is no sample."""
    return F.cross_entropy(logits, target) if len(target) else logits.sum() * 0.0


MODEL_KEYS = {"input_dim", "num_classes", "base_length", "num_scales", "centre_stride", "context_ratio",
              "num_samples", "conv_channels", "conv_kernel", "pool_kernel", "rank_hidden_dim", "cls_hidden_dim",
              "pos_tiou", "neg_tiou", "class_tiou", "samples_per_video", "loss_weights", "proposal_nms", "nms",
              "classes_per_proposal", "drop_background", "cls_samples_per_video", "detection_score"}


@MODELS.register("tcn")
def build_tcn(cfg: dict) -> TCN:
    """A TCN from the `model` section of a config (keys: MODEL_KEYS; `name`/`type` are ignored)."""
    cfg = model_section(cfg, "tcn", MODEL_KEYS, required=("input_dim", "num_classes"))
    return TCN(**cfg)
