"""Pictures of predictions: a video's timeline, precision-recall curves, 2D-TAN's score map, a query's moments.

Every function draws one figure and writes it as a PNG, creating the parent folders, and returns the
path. Figures are plain `matplotlib.figure.Figure`s on the Agg canvas: no screen, no pyplot state, so
plotting is safe in servers and threads. Sizes are fixed in inches at `DPI` (constrained layout, no
tight cropping), so a figure's pixel size is predictable: `figsize * DPI`.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from tal.datasets.types import DetectionAnnotations
from tal.errors import TalInputError
from tal.eval.detection import _average_precision, class_matches
from tal.eval.predictions import SegmentPredictions
from tal.ops.segments import tiou as segment_tiou

DPI = 100
PROPOSAL_LABEL = "proposal"  # the row of predictions without a label
MAX_LEGEND_CLASSES = 20  # more PR curves than this get no legend (name the ones you want with `classes`)
_MIN_ALPHA = 0.12  # opacity of the lowest score, so that no prediction disappears


def plot_timeline(out_png: str | Path, duration_s: float,
                  ground_truth: Sequence[tuple[float, float, str | None]],
                  predictions: Sequence[tuple[float, float, str | None, float]],
                  title: str = "", top_k: int | None = 20, score_threshold: float = 0.0,
                  classes: Sequence[str] | None = None, num_labelled: int = 5) -> Path:
    """`timeline_figure` written as a PNG."""
    return _save(timeline_figure(duration_s, ground_truth, predictions, title, top_k, score_threshold, classes,
                                 num_labelled), out_png)


def timeline_figure(duration_s: float, ground_truth: Sequence[tuple[float, float, str | None]],
                    predictions: Sequence[tuple[float, float, str | None, float]],
                    title: str = "", top_k: int | None = 20, score_threshold: float = 0.0,
                    classes: Sequence[str] | None = None, num_labelled: int = 5) -> Figure:
    """One video's ground truth and predictions on a time axis [0, duration_s], one row per class.

    Rows are the union of ground-truth labels (first appearance) and predicted labels (best score
    first); a label None (proposals) is the row "proposal". In each row the ground truth is a solid
    bar on top and the predictions translucent bars below, opacity following the score (scores in
    [0, 1] are used as they are, others are min-max scaled); overlapping predictions of a class take
    separate lanes, and the `num_labelled` best carry their score. A class has one colour in every
    figure: its place in `classes` (the head's class list) or, without it, a hash of its name. Only
    the `top_k` best predictions with score >= `score_threshold` are drawn (`top_k` None: all);
    end < start ones overlap nothing and are left out.
    """
    gt = [(float(s), float(e), _label(lab)) for s, e, lab in ground_truth]
    preds = [(float(s), float(e), _label(lab), float(score)) for s, e, lab, score in predictions
             if float(score) >= score_threshold and float(e) >= float(s)]
    preds.sort(key=lambda p: -p[3])  # stable: ties keep their input order
    if top_k is not None:
        preds = preds[:max(int(top_k), 0)]
    rows = list(dict.fromkeys([lab for _, _, lab in gt] + [lab for _, _, lab, _ in preds]))
    alphas = _score_alpha(np.array([p[3] for p in preds]))  # [P]
    order = {label: i for i, label in enumerate(classes or [])}

    fig, ax = _figure((12.0, 1.4 + 0.42 * max(len(rows), 1)))
    for r, label in enumerate(rows):
        color = class_color(label, order)
        spans = [(s, e - s) for s, e, lab in gt if lab == label]
        if spans:
            ax.broken_barh(spans, (r - 0.42, 0.4), facecolors=color, edgecolor="black", linewidth=0.6)
        mine = [i for i, p in enumerate(preds) if p[2] == label]
        lane_of = _lanes([preds[i][:2] for i in mine])  # [len(mine)]
        height = 0.4 / max(max(lane_of, default=0) + 1, 1)
        for i, lane in zip(mine, lane_of):
            s, e, _, score = preds[i]
            y = r + 0.02 + lane * height
            ax.add_patch(Rectangle((s, y), e - s, height, facecolor=to_rgba(color, alphas[i]),
                                   edgecolor=to_rgba(color, 1.0), linewidth=0.8))
            if i < num_labelled:
                ax.text(s, y + height / 2, f" {score:.2f}", va="center", ha="left", fontsize=7, clip_on=True)
    ax.set_xlim(0.0, float(duration_s))
    ax.set_ylim(len(rows) - 0.5 if rows else 0.5, -0.5)  # first row on top
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("time (s)")
    ax.grid(axis="x", alpha=0.3)
    if not rows:
        ax.text(0.5, 0.5, "no ground truth and no predictions", transform=ax.transAxes, ha="center", va="center")
    kept = [f"top {top_k}" if top_k is not None else "all"]
    kept += [f"score >= {score_threshold:g}"] if score_threshold > 0 else []
    counts = f"{len(gt)} ground truth, {len(preds)} predictions ({', '.join(kept)})" if gt else \
        f"{len(preds)} predictions ({', '.join(kept)})"
    ax.set_title(f"{title}: {counts}" if title else counts, fontsize=10)
    handles = [Patch(facecolor="0.3", edgecolor="black", label="ground truth (top half)")] if gt else []
    handles.append(Patch(facecolor=to_rgba("0.3", 0.35), edgecolor="0.3",
                         label=f"prediction ({'bottom half; ' if gt else ''}opacity = score)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
    return fig


def _lanes(spans: Sequence[tuple[float, float]], max_lanes: int = 4) -> list[int]:
    """A lane per span so that spans of one lane do not overlap (greedy by start); past `max_lanes`, a
    span shares the lane that frees first."""
    lane_of = [0] * len(spans)
    ends: list[float] = []  # per lane, where its last span ends
    for i in sorted(range(len(spans)), key=lambda k: spans[k][0]):
        start, end = spans[i]
        lane = next((k for k, last in enumerate(ends) if last <= start), None)
        if lane is None and len(ends) < max_lanes:
            ends.append(end)
            lane = len(ends) - 1
        elif lane is None:
            lane = int(np.argmin(ends))
        ends[lane] = max(ends[lane], end)
        lane_of[i] = lane
    return lane_of


def plot_pr_curves(out_png: str | Path, ground_truth: DetectionAnnotations, predictions: SegmentPredictions,
                   tiou: float = 0.5, classes: Sequence[str] | None = None) -> Path:
    """Per-class precision-recall curves at one tIoU, matched exactly as `tal.eval.detection` does.

    Each curve is the interpolated precision envelope that the ActivityNet AP integrates, so the area
    under a drawn curve is the class's AP (given in the legend, equal to `evaluate_detection`'s).
    `classes` chooses the curves (default: every class of the ground truth); the title's mAP is over
    all classes, as `tal evaluate detection` reports it. With more than `MAX_LEGEND_CLASSES` curves the
    legend is left out.
    """
    matches = class_matches(ground_truth, predictions, np.array([tiou]))  # {label: (tp [1, n], num_gt)}
    ap = {label: float(_average_precision(tp, num_gt)[0]) for label, (tp, num_gt) in matches.items()}
    if classes is None:
        shown = list(matches)
    else:
        unknown = [c for c in classes if c not in matches]
        if unknown:
            raise TalInputError(f"{ground_truth.source or 'ground truth'}: no ground truth of class "
                                f"{', '.join(map(repr, unknown))}; classes are: {_examples(list(matches))}")
        shown = list(dict.fromkeys(classes))

    with_legend = len(shown) <= MAX_LEGEND_CLASSES
    fig, ax = _figure((10.0, 6.5))
    for c, label in enumerate(sorted(shown, key=lambda k: -ap[k])):
        tp, num_gt = matches[label]
        recall, precision = _pr_envelope(tp[0], num_gt)
        ax.plot(recall, precision, drawstyle="steps-post", color=_class_color(c),
                linewidth=1.4 if with_legend else 0.6, alpha=1.0 if with_legend else 0.5,
                label=f"{label} (AP {ap[label]:.3f}, {tp.shape[1]} pred / {num_gt} gt)")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (interpolated)")
    ax.grid(alpha=0.3)
    ax.set_title(f"precision-recall at tIoU {tiou:.2f}: mAP {np.mean(list(ap.values())):.4f} over "
                 f"{len(ap)} classes ({len(shown)} shown{'' if with_legend else ', too many to name'})", fontsize=10)
    if with_legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _save(fig, out_png)


def plot_score_map(out_png: str | Path, score_map: np.ndarray, duration_s: float,
                   valid_mask: np.ndarray | None = None, ground_truth: tuple[float, float] | None = None,
                   title: str = "") -> Path:
    """2D-TAN's score map [N, N]: row i is the start clip, column j the end clip, cell (i, j) the
    moment [i, j + 1] * duration_s / N. Cells outside `valid_mask` (default: j >= i) are blank. The
    cell closest to `ground_truth` (highest tIoU among j >= i) is outlined in red, the best-scoring
    valid cell marked with a white cross.
    """
    scores = np.asarray(score_map, dtype=np.float64)  # [N, N]
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1]:
        raise TalInputError(f"score map must be square [N, N], got shape {scores.shape}")
    num_clips = scores.shape[0]
    upper = np.triu(np.ones((num_clips, num_clips), dtype=bool))  # [N, N]
    valid = upper if valid_mask is None else np.asarray(valid_mask, dtype=bool)  # [N, N]
    if valid.shape != scores.shape:
        raise TalInputError(f"valid_mask shape {valid.shape} differs from the score map's {scores.shape}")
    clip_s = float(duration_s) / num_clips

    fig, ax = _figure((7.5, 6.5))
    cmap = colormaps["viridis"].with_extremes(bad="0.9")  # masked cells light grey
    image = ax.imshow(np.ma.masked_array(scores, ~valid), cmap=cmap, origin="upper", interpolation="nearest",
                      extent=(-0.5, num_clips - 0.5, num_clips - 0.5, -0.5))
    fig.colorbar(image, ax=ax, label="score", shrink=0.85)
    handles = []
    if valid.any():
        flat = np.where(valid, scores, -np.inf).argmax()
        top_i, top_j = divmod(int(flat), num_clips)
        handles += ax.plot(top_j, top_i, marker="x", color="white", markersize=9, markeredgewidth=2,
                           linestyle="none", label=f"top-1 [{top_i * clip_s:.1f}, {(top_j + 1) * clip_s:.1f}] s")
    if ground_truth is not None:
        steps_s = np.arange(num_clips + 1) * clip_s  # [N + 1]
        cells = np.stack(np.broadcast_arrays(steps_s[:-1, None], steps_s[None, 1:]), axis=-1)  # [N, N, 2]
        overlap = np.where(upper, segment_tiou(cells, np.asarray(ground_truth, dtype=np.float64)), -1.0)  # [N, N]
        gt_i, gt_j = divmod(int(overlap.argmax()), num_clips)
        handles.append(ax.add_patch(Rectangle((gt_j - 0.5, gt_i - 0.5), 1, 1, fill=False, edgecolor="red",
                                              linewidth=2.0, label=f"ground truth [{ground_truth[0]:.1f}, "
                                                                   f"{ground_truth[1]:.1f}] s")))
    if handles:
        ax.legend(handles=handles, loc="lower left", fontsize=8)
    ax.set_xlabel(f"end clip j (ends at (j + 1) x {clip_s:.2f} s)")
    ax.set_ylabel(f"start clip i (starts at i x {clip_s:.2f} s)")
    ax.set_title(title or f"score map, {num_clips} clips over {float(duration_s):.1f} s", fontsize=10)
    return _save(fig, out_png)


def plot_grounding(out_png: str | Path, duration_s: float, query: str, ground_truth: tuple[float, float] | None,
                   moments: Sequence[Sequence[float]], top_k: int = 5, video: str | None = None) -> Path:
    """`grounding_figure` written as a PNG."""
    return _save(grounding_figure(duration_s, query, ground_truth, moments, top_k, video), out_png)


def grounding_figure(duration_s: float, query: str, ground_truth: tuple[float, float] | None,
                     moments: Sequence[Sequence[float]], top_k: int = 5, video: str | None = None) -> Figure:
    """One query: its ground truth on the top row and its `top_k` best moments below, rank 1 first.
    The title is the query, after the video id when `video` is given.

    A moment is (start_s, end_s, score), or (start_s, end_s) when unscored (then drawn as ranked).
    Opacity follows the score; each moment is labelled with its score and its tIoU with the ground truth.
    """
    ranked = np.asarray([list(m) for m in moments], dtype=np.float64)  # [K, 2 or 3]
    if not len(ranked):
        ranked = np.zeros((0, 3))
    if ranked.ndim != 2 or ranked.shape[1] not in (2, 3):
        raise TalInputError(f"moments must all be (start_s, end_s, score) or all (start_s, end_s), got {moments!r}")
    if ranked.shape[1] == 3:
        ranked = ranked[np.argsort(-ranked[:, 2], kind="stable")]
    ranked = ranked[:max(int(top_k), 0)]
    has_scores = ranked.shape[1] == 3
    alphas = _score_alpha(ranked[:, 2]) if has_scores else np.full(len(ranked), 0.6)  # [k]
    overlap = (segment_tiou(ranked[:, :2], np.asarray(ground_truth, dtype=np.float64))
               if ground_truth is not None and len(ranked) else np.full(len(ranked), np.nan))  # [k]

    fig, ax = _figure((11.0, 1.9 + 0.42 * (len(ranked) + 1)))
    names, notes = ["ground truth"], [f"[{ground_truth[0]:.1f}, {ground_truth[1]:.1f}] s" if ground_truth else ""]
    if ground_truth is not None:
        ax.broken_barh([(ground_truth[0], ground_truth[1] - ground_truth[0])], (-0.4, 0.8), facecolors="tab:green",
                       edgecolor="black", linewidth=0.6)
    else:
        ax.text(0.01 * float(duration_s), 0, "(not given)", va="center", fontsize=8, color="0.4")
    for k, (moment, alpha) in enumerate(zip(ranked, alphas), 1):
        start_s, end_s = float(moment[0]), float(moment[1])
        ax.add_patch(Rectangle((start_s, k - 0.4), end_s - start_s, 0.8, facecolor=to_rgba("tab:blue", alpha),
                               edgecolor="tab:blue", linewidth=0.6))
        note = [f"score {moment[2]:.3f}"] if has_scores else []
        if not np.isnan(overlap[k - 1]):
            note.append(f"tIoU {overlap[k - 1]:.2f}")
        names.append(f"rank {k}")
        notes.append(", ".join(note))
    if ground_truth is not None:
        for edge_s in ground_truth:
            ax.axvline(edge_s, color="tab:green", linestyle=":", linewidth=1.0)
    ax.set_xlim(0.0, float(duration_s))
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_yticks(range(len(names)), names)
    right = ax.twinx()  # score and tIoU of each row, beside the plot
    right.set_ylim(ax.get_ylim())
    right.set_yticks(range(len(notes)), notes, fontsize=8)
    ax.set_xlabel("time (s)")
    ax.grid(axis="x", alpha=0.3)
    heading = f'{video}: "{query}"' if video else f'"{query}"'
    ax.set_title("\n".join(textwrap.wrap(heading, 110)[:2]), fontsize=10)
    return fig


def _figure(figsize: tuple[float, float]):
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Figure, out_png: str | Path) -> Path:
    path = Path(out_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def _label(label: str | None) -> str:
    return PROPOSAL_LABEL if label is None else str(label)


def _class_color(index: int):
    return colormaps["tab10"](index % 10)


def class_color(label: str, order: dict[str, int] | None = None):
    """The colour of a class, the same in every figure: its index in `order` (a head's class list) when
    listed there, else a hash of its name (zlib.crc32, stable across runs, unlike Python's hash)."""
    import zlib

    if order and label in order:
        return colormaps["tab20"](order[label] % 20)
    return colormaps["tab20"](zlib.crc32(label.encode("utf-8")) % 20)


def _score_alpha(scores: np.ndarray) -> np.ndarray:
    """Opacity in [_MIN_ALPHA, 1] of scores [n]: as they are when in [0, 1], else min-max scaled."""
    if not len(scores):
        return np.zeros(0)
    if scores.min() < 0 or scores.max() > 1:
        span = scores.max() - scores.min()
        scores = (scores - scores.min()) / span if span > 0 else np.ones_like(scores)
    return _MIN_ALPHA + (1 - _MIN_ALPHA) * scores


def _pr_envelope(tp: np.ndarray, num_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """Recall and interpolated precision of ranked true positives [n], with the end points the AP uses
    (recall 0 and 1): a step curve whose area is the all-points AP of `tal.eval.detection`."""
    tp_cum = np.cumsum(tp, dtype=np.float64)  # [n]
    fp_cum = np.cumsum(~tp, dtype=np.float64)  # [n]
    precision = np.concatenate([[0.0], tp_cum / np.maximum(tp_cum + fp_cum, 1), [0.0]])  # [n + 2]
    recall = np.concatenate([[0.0], tp_cum / max(num_gt, 1), [1.0]])  # [n + 2]
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # [n + 2]
    # steps-post draws envelope[i] from recall[i] to recall[i + 1]: the AP sums envelope[i + 1] over that span
    return recall, np.append(envelope[1:], 0.0)


def _examples(names: list[str], limit: int = 8) -> str:
    text = ", ".join(map(repr, names[:limit]))
    return text + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
