"""`tal visualize timeline|pr|grounding`: draw predictions against ground truth as a PNG.

The path of the written PNG goes to stdout; bad input (an unknown video, a query index out of range)
exits 2 with one line naming what exists.
"""
from __future__ import annotations

import argparse
import sys

TIMELINE_EXAMPLE = """example:
  tal visualize timeline --gt thumos14.json --pred detections.json --video video_test_0000004 --out t.png

one row per class: ground truth solid, the --top-k best predictions translucent (opacity = score).
"""
PR_EXAMPLE = """example:
  tal visualize pr --gt thumos14.json --pred detections.json --subset Test --tiou 0.5 --out pr.png
  tal visualize pr --gt activity_net.v1-3.json --pred detections.json --subset validation --classes Archery,Bathing

per-class precision-recall at one tIoU, matched as 'tal evaluate detection' does; AP in the legend.
"""
GROUNDING_EXAMPLE = """example:
  tal visualize grounding --pred charades_test_predictions.jsonl --index 0 --out q0.png
  tal visualize grounding --pred charades_test_predictions.jsonl --video 3MSZA

one query's ranked moments against its ground truth ("segment"); --index counts queries from 0.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "visualize", help="draw predictions vs ground truth: a video's timeline, PR curves, a query's moments",
        description="Draw prediction files against their ground truth and write a PNG (path printed on stdout).",
        epilog=TIMELINE_EXAMPLE + "\n" + PR_EXAMPLE + "\n" + GROUNDING_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    plots = parser.add_subparsers(dest="plot", metavar="PLOT", required=True)

    timeline = plots.add_parser(
        "timeline", help="one video: ground truth and predictions per class on a time axis", epilog=TIMELINE_EXAMPLE,
        description="One video's ground-truth segments and its best predictions, one row per class.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    timeline.add_argument("--gt", required=True, metavar="GT.json",
                          help='ground truth, ActivityNet format {"database": {video: {"duration", "annotations"}}}')
    timeline.add_argument("--pred", required=True, metavar="PRED.json",
                          help='predictions {"results": {video: [{"label"?, "score", "segment"}]}} '
                               '(no label: the row "proposal")')
    timeline.add_argument("--video", required=True, metavar="VID", help="the video id to draw")
    timeline.add_argument("--out", metavar="PNG", help="output file (default timeline_<VID>.png)")
    timeline.add_argument("--top-k", type=_top_k, default=20, metavar="K",
                          help="draw the K best predictions (default 20; 0 draws all)")
    timeline.add_argument("--score-threshold", type=float, default=0.0, metavar="S",
                          help="leave out predictions scored below S (default 0)")
    timeline.set_defaults(func=_run_timeline)

    pr = plots.add_parser(
        "pr", help="per-class precision-recall curves at one tIoU", epilog=PR_EXAMPLE,
        description="Per-class precision-recall at one tIoU with the ActivityNet matching of "
                    "'tal evaluate detection'; the area under each curve is the class's AP.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    pr.add_argument("--gt", required=True, metavar="GT.json",
                    help='ground truth, ActivityNet format {"database": {video: {"subset", "annotations"}}}')
    pr.add_argument("--pred", required=True, metavar="PRED.json",
                    help='predictions, ActivityNet submission format {"results": {video: [{"label", "score", '
                         '"segment"}]}}')
    pr.add_argument("--subset", metavar="S", help="ground-truth subset (required when the file has several)")
    pr.add_argument("--tiou", type=_unit_interval, default=0.5, metavar="T", help="tIoU threshold (default 0.5)")
    pr.add_argument("--classes", type=_names, metavar="A,B,...",
                    help="draw only these classes (default all; more than 20 curves get no legend)")
    pr.add_argument("--out", metavar="PNG", help="output file (default pr_tiou<T>.png)")
    pr.set_defaults(func=_run_pr)

    grounding = plots.add_parser(
        "grounding", help="one query: its ranked moments against its ground truth", epilog=GROUNDING_EXAMPLE,
        description="One query of a grounding prediction file: ground truth ('segment') on top, the best "
                    "moments below with their score and tIoU.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    grounding.add_argument("--pred", required=True, metavar="PRED.jsonl",
                           help='one query a line: {"video", "query", "duration"?, "segment"?, '
                                '"moments": [[s, e, score], ...]}')
    which = grounding.add_mutually_exclusive_group()
    which.add_argument("--index", type=int, metavar="I", help="the I-th query of the file, from 0 (default 0)")
    which.add_argument("--video", metavar="VID", help="the first query of this video")
    grounding.add_argument("--top-k", type=_top_k, default=5, metavar="K", help="moments to draw (default 5)")
    grounding.add_argument("--out", metavar="PNG", help="output file (default grounding_<I>.png)")
    grounding.set_defaults(func=_run_grounding)


def _run_timeline(args: argparse.Namespace) -> int:
    import numpy as np

    from tal.datasets.annotations import load_detection_annotations
    from tal.datasets.jsonio import read_json
    from tal.errors import TalInputError
    from tal.eval.predictions import parse_segment_predictions
    from tal.viz import plot_timeline

    annotations = load_detection_annotations(args.gt)
    if args.video not in annotations.videos:
        raise TalInputError(f"{args.gt}: no video {args.video!r}; videos include {_examples(list(annotations.videos))}")
    video = annotations.videos[args.video]
    data = read_json(args.pred)
    predictions = parse_segment_predictions(data, str(args.pred), with_labels=False)  # checks every entry
    rows = np.flatnonzero(predictions.video_of_each() == predictions.video_ids.index(args.video)) \
        if args.video in predictions.video_ids else np.zeros(0, dtype=np.int64)
    if not len(rows):
        print(f"tal visualize timeline: note: {args.pred} has no predictions for {args.video!r}", file=sys.stderr)
    labels = [item.get("label") for item in data["results"].get(args.video, [])]  # None: a proposal
    predicted = [(*predictions.segments[i], None if label is None else str(label), predictions.scores[i])
                 for i, label in zip(rows, labels)]
    ground_truth = [(s, e, label) for (s, e), label in zip(video.segments, video.labels)]
    ends = [e for _, e, *_ in ground_truth + predicted]
    duration_s = video.duration or max(ends, default=1.0)
    out = plot_timeline(args.out or f"timeline_{args.video}.png", duration_s, ground_truth, predicted,
                        title=args.video, top_k=args.top_k or None, score_threshold=args.score_threshold,
                        classes=annotations.classes)
    print(out)
    return 0


def _run_pr(args: argparse.Namespace) -> int:
    from tal.eval.groundtruth import load_subset
    from tal.eval.predictions import read_segment_predictions
    from tal.viz import plot_pr_curves

    ground_truth = load_subset(args.gt, args.subset)
    predictions = read_segment_predictions(args.pred, with_labels=True)
    out = plot_pr_curves(args.out or f"pr_tiou{args.tiou:.2f}.png", ground_truth, predictions, args.tiou,
                         args.classes)
    print(out)
    return 0


def _run_grounding(args: argparse.Namespace) -> int:
    import numpy as np

    from tal.datasets.jsonio import iter_jsonl
    from tal.errors import TalInputError
    from tal.eval.predictions import parse_grounding_predictions
    from tal.viz import plot_grounding

    lines = list(iter_jsonl(args.pred))
    queries = parse_grounding_predictions(lines, str(args.pred))  # checks every line
    if args.video is not None:
        found = [i for i, q in enumerate(queries) if q.video == args.video]
        if not found:
            videos = list(dict.fromkeys(q.video for q in queries))
            raise TalInputError(f"{args.pred}: no query of video {args.video!r}; videos include {_examples(videos)}")
        if len(found) > 1:
            print(f"tal visualize grounding: note: video {args.video!r} has {len(found)} queries (--index "
                  f"{', '.join(map(str, found[:10]))}{', ...' if len(found) > 10 else ''}); drawing the first",
                  file=sys.stderr)
        index = found[0]
    else:
        index = 0 if args.index is None else args.index
        if not 0 <= index < len(queries):
            raise TalInputError(f"{args.pred}: --index {index} is out of range: the file has {len(queries)} "
                                f"queries (0 to {len(queries) - 1})")
    query, (_, obj) = queries[index], lines[index]
    moments = np.array(obj["moments"], dtype=np.float64).reshape(-1, len(obj["moments"][0]) if obj["moments"] else 3)
    duration = obj.get("duration")
    if duration is None:
        ends = list(moments[:, 1]) + ([query.segment[1]] if query.segment else [])
        duration = max(ends, default=1.0)
    elif isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 0 < duration < float("inf"):
        raise TalInputError(f"{args.pred}:{query.lineno}: 'duration' must be a positive number of seconds, "
                            f"got {duration!r}")
    out = plot_grounding(args.out or f"grounding_{index}.png", float(duration), query.query, query.segment,
                         moments.tolist(), top_k=args.top_k or len(moments), video=query.video)
    print(out)
    return 0


def _examples(names: list[str], limit: int = 5) -> str:
    text = ", ".join(map(repr, names[:limit]))
    return text + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _top_k(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 0")
    return value


def _unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a tIoU in (0, 1]")
    return value


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma list of class names")
    return names
