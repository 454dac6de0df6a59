"""`tal evaluate detection|proposals|grounding`: score a prediction file, print one JSON object.

The metrics go to stdout as JSON (full float precision); notes about ignored or defaulted input go
to stderr; bad input exits 2 with one line.
"""
from __future__ import annotations

import argparse
import json
import sys

DETECTION_EXAMPLE = """example:
  tal evaluate detection --gt activity_net.v1-3.json --pred detections.json --subset validation
  tal evaluate detection --gt thumos14.json --pred detections.json --subset Test --protocol thumos14
  tal evaluate detection --gt my_gt.json --pred detections.json --subset test --tiou 0.5,0.75

prints {"mAP": {"0.50": x, ...}, "average_mAP": x, "tiou_thresholds": [...]}; --per-class adds
{"per_class_AP": {label: {tiou: ap}}}.
"""
PROPOSALS_EXAMPLE = """example:
  tal evaluate proposals --gt activity_net.v1-3.json --pred proposals.json --subset validation

prints {"AR@1": x, "AR@5": x, "AR@10": x, "AR@50": x, "AR@100": x, "AUC": x} (AUC as a fraction).
"""
GROUNDING_EXAMPLE = """example:
  tal evaluate grounding --pred charades_test_predictions.jsonl --recall 1,5 --iou 0.5,0.7
  tal evaluate grounding --pred predictions.jsonl --gt charades_sta_test.jsonl --nms 0.45

prints {"R@1,IoU=0.5": x, ..., "mIoU": x}. Without --gt, each line's "segment" is the ground truth.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="score predictions: detection mAP, proposal AR@AN, grounding R@n,IoU=m",
        description="Score a prediction file against ground truth with the official protocols "
                    "(ActivityNet detection / proposals, 2D-TAN grounding). Prints one JSON object.",
        epilog=DETECTION_EXAMPLE + "\n" + PROPOSALS_EXAMPLE + "\n" + GROUNDING_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)

    detection = tasks.add_parser(
        "detection", help="mAP at tIoU thresholds (ActivityNet protocol)", epilog=DETECTION_EXAMPLE,
        description="Mean average precision, equal to activitynet/ActivityNet Evaluation/eval_detection.py.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_gt_pred(detection)
    thresholds = detection.add_mutually_exclusive_group()
    thresholds.add_argument("--tiou", type=_thresholds, metavar="A:B:STEP|X,Y,...",
                            help="tIoU thresholds, a range or a comma list (default: --protocol activitynet13)")
    thresholds.add_argument("--protocol", choices=("thumos14", "activitynet13"),
                            help="the benchmark's thresholds: thumos14 0.3:0.7:0.1, activitynet13 0.5:0.95:0.05")
    detection.add_argument("--per-class", action="store_true", help="also print the AP of every class at every tIoU")
    detection.set_defaults(func=_run_detection)

    proposals = tasks.add_parser(
        "proposals", help="AR@AN and AUC (ActivityNet protocol)", epilog=PROPOSALS_EXAMPLE,
        description="Average recall vs average number of proposals per video, equal to activitynet/ActivityNet "
                    "Evaluation/eval_proposal.py (tIoU 0.5:0.95:0.05). Labels are ignored.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_gt_pred(proposals)
    proposals.add_argument("--max-avg-proposals", type=_positive_float, default=100.0, metavar="N",
                           help="right end of the AN axis (default 100)")
    proposals.set_defaults(func=_run_proposals)

    grounding = tasks.add_parser(
        "grounding", help="R@n,IoU=m and mIoU (2D-TAN protocol)", epilog=GROUNDING_EXAMPLE,
        description="Moment retrieval recall after NMS over each query's ranked moments, and mean top-1 IoU, "
                    "as microsoft/2D-TAN lib/core/eval.py computes them.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    grounding.add_argument("--pred", required=True, metavar="PRED.jsonl",
                           help='one query a line: {"video", "query", "segment"?, "moments": [[s, e, score], ...]}')
    grounding.add_argument("--gt", metavar="GT.jsonl",
                           help='ground truth, one query a line {"video", "duration", "query", "segment"}; '
                                'matched by line order '
                                'when both files list the same queries, else by (video, query)')
    grounding.add_argument("--recall", type=_ranks, default=(1, 5), metavar="N,...", help="ranks n (default 1,5)")
    grounding.add_argument("--iou", type=_ious, default=(0.3, 0.5, 0.7), metavar="M,...",
                           help="IoU thresholds m (default 0.3,0.5,0.7)")
    grounding.add_argument("--nms", type=_nms_threshold, default=0.5, metavar="T",
                           help="NMS threshold over the ranked moments, 2D-TAN's rule (default 0.5; at 1 only moments "
                                "whose overlap is undefined, two zero-length ones, are dropped, as in 2D-TAN); "
                                "'none': no NMS, for moments already suppressed")
    grounding.add_argument("--iou-ge", action="store_true", help="count IoU >= m as a hit instead of IoU > m")
    grounding.set_defaults(func=_run_grounding)


def _add_gt_pred(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", required=True, metavar="GT.json",
                        help='ground truth, ActivityNet format {"database": {video: {"subset", "annotations"}}}')
    parser.add_argument("--pred", required=True, metavar="PRED.json",
                        help='predictions, ActivityNet submission format '
                             '{"results": {video: [{"label", "score", "segment"}]}}')
    parser.add_argument("--subset", metavar="S",
                        help="ground-truth subset to evaluate on (required when the file has several)")


def _run_detection(args: argparse.Namespace) -> int:
    from tal.eval.detection import PROTOCOL_TIOU, evaluate_detection_files

    tiou = args.tiou if args.tiou is not None else PROTOCOL_TIOU[args.protocol or "activitynet13"]
    result = evaluate_detection_files(args.gt, args.pred, args.subset, tiou)
    notes = list(result.notes)
    if args.tiou is None and args.protocol is None:
        notes.append("tIoU thresholds 0.5:0.95:0.05 (ActivityNet-1.3, the default); THUMOS14 figures use "
                     "--protocol thumos14 (0.3:0.7:0.1)")
    return _emit(args, result.to_json(per_class=args.per_class), notes)


def _run_proposals(args: argparse.Namespace) -> int:
    from tal.eval.proposals import evaluate_proposals_files

    result = evaluate_proposals_files(args.gt, args.pred, args.subset, args.max_avg_proposals)
    return _emit(args, result.to_json(), result.notes)


def _run_grounding(args: argparse.Namespace) -> int:
    from tal.eval.grounding import evaluate_grounding_files

    result = evaluate_grounding_files(args.pred, args.gt, args.recall, args.iou, args.nms, args.iou_ge)
    return _emit(args, result.to_json(), result.notes)


def _emit(args: argparse.Namespace, metrics: dict, notes: list[str]) -> int:
    for note in notes:
        print(f"tal evaluate {args.task}: note: {note}", file=sys.stderr)
    print(json.dumps(metrics, indent=2))
    return 0


def _thresholds(text: str):
    """`a:b:step` (np.linspace, so 0.5:0.95:0.05 is bit-identical to the official default) or `x,y,...`."""
    import numpy as np

    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0 or stop < start:
                raise argparse.ArgumentTypeError(f"{text!r}: need start <= stop and step > 0")
            num = int(round((stop - start) / step)) + 1
            if abs(start + (num - 1) * step - stop) > 1e-9:
                raise argparse.ArgumentTypeError(f"{text!r}: {stop} is not reached from {start} in steps of {step}")
            values = np.linspace(start, stop, num)
        else:
            values = np.array([float(x) for x in text.split(",")])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected A:B:STEP or a comma list of numbers") from None
    if not ((values > 0) & (values <= 1)).all():
        raise argparse.ArgumentTypeError(f"{text!r}: thresholds must be in (0, 1]")
    return values


def _ranks(text: str) -> tuple[int, ...]:
    try:
        ranks = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma list of ranks, e.g. 1,5") from None
    if min(ranks) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: ranks must be >= 1")
    return ranks


def _ious(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma list of IoUs, e.g. 0.5,0.7") from None
    if not all(0 <= v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: IoU thresholds must be in [0, 1]")
    return values


def _unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number in [0, 1]") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number in [0, 1]")
    return value


def _nms_threshold(text: str) -> float | None:
    return None if text.strip().lower() == "none" else _unit_float(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number > 0")
    return value
