"""`tal detect`: actions in new videos with a trained detection head, as ActivityNet submission JSON."""
from __future__ import annotations

import argparse
import json
import math
import sys

from tal.cli.common import add_device, add_threads, add_weights, apply_threads, count, device_of

EXAMPLE = """examples:
  tal detect --checkpoint runs/demo/detection/checkpoint_best.pt my_video.mp4 --plot plots/
  tal detect --checkpoint runs/thumos/checkpoint_best.pt --features i3d.h5 video_test_0000004 --out det.json

Each VIDEO is a video file (features are extracted with the settings the head was trained on, and kept in
--features when given) or a video id of --features. Prints (or writes to --out) the ActivityNet submission
format {"version", "results": {video: [{"label", "score", "segment": [s, e]}]}, "external_data": {}}.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "detect", help="detect actions in videos with a trained head",
        description="Run a checkpoint from `tal train` (a2net, s3d, tcn, bsnpp, s2dtan) on videos or cached ids.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files or video ids of --features")
    parser.add_argument("--checkpoint", required=True, help="a detection checkpoint written by tal train")
    parser.add_argument("--features", help="feature cache: read ids from it, and keep extracted features in it")
    parser.add_argument("--out", help="write the detections JSON here (default: stdout)")
    parser.add_argument("--plot", metavar="DIR", help="also draw a timeline PNG per video into DIR")
    parser.add_argument("--score-threshold", type=float, default=0.0, help="drop detections scoring below S")
    parser.add_argument("--top-k", type=int, default=None, help="keep at most K detections per video")
    add_weights(parser)
    add_device(parser)
    add_threads(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tal.api import ActionDetector
    from tal.datasets.jsonio import write_json_atomic
    from tal.errors import TalInputError

    if args.top_k is not None and args.top_k < 1:
        raise TalInputError(f"--top-k must be >= 1, got {args.top_k}")
    if not math.isfinite(args.score_threshold):
        raise TalInputError(f"--score-threshold must be a number, got {args.score_threshold}")
    apply_threads(args)
    features = args.features if args.features and Path(args.features).is_file() else None
    detector = ActionDetector.from_checkpoint(args.checkpoint, features=features, device=device_of(args),
                                              cache=args.features, weights=args.weights)
    results, timelines = {}, []
    for video in args.videos:
        detections = detector.detect(video, args.score_threshold, args.top_k)
        key = Path(video).stem if Path(video).is_file() else video
        results[key] = [{k: v for k, v in (("label", d["label"]), ("score", d["score"]),
                                           ("segment", [d["start"], d["end"]])) if v is not None}
                        for d in detections]
        print(f"{key}: {count(len(detections), 'detection')}", file=sys.stderr)
        timelines.append((key, detector.duration_of(video), detections))
    out = {"version": "tal", "results": results, "external_data": {}}
    if args.out:
        write_json_atomic(out, args.out, indent=None)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(json.dumps(out), flush=True)
    if args.plot:  # after the JSON, so that a folder we cannot write to loses no detections
        _plot(Path(args.plot), timelines, detector.classes)
    return 0


def _plot(folder, timelines: list, classes: list[str]) -> None:
    from tal.errors import TalInputError
    from tal.viz import plot_timeline

    for key, duration, detections in timelines:
        try:
            png = plot_timeline(folder / f"{key}.png", duration, [],
                                [(d["start"], d["end"], d["label"], d["score"]) for d in detections],
                                title=f"{key}: detections", classes=classes)
        except OSError as exc:
            raise TalInputError(f"--plot {folder}: cannot write the timelines ({exc.strerror}); the detections "
                                f"were written already") from None
        print(f"{key}: timeline {png}", file=sys.stderr)
