"""`tal query`: ranked moments for a sentence in one video, with a trained grounding head."""
from __future__ import annotations

import argparse
import json
import sys

from tal.cli.common import add_device, add_threads, add_weights, apply_threads, device_of

EXAMPLE = """examples:
  tal query --checkpoint runs/charades/checkpoint_best.pt --features charades_vgg.h5 --video 3MSZA "person opens a door"
  tal query --checkpoint runs/demo/grounding/checkpoint_best.pt --video my_clip.mp4 "a ball bounces" --top-k 3

prints {"video": ..., "query": ..., "moments": [{"start": s, "end": e, "score": x}, ...]} (seconds, best first).
A video file is accepted when the head was trained on features tal can extract (its backbone is recorded).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "query", help="find when a sentence happens in a video (moment retrieval)",
        description="Rank the moments of a video for a sentence with a checkpoint from `tal train` (2dtan, man).",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sentence", help="what to look for, in plain words")
    parser.add_argument("--checkpoint", required=True, help="a grounding checkpoint written by tal train")
    parser.add_argument("--video", required=True, help="a video id of --features, or a video file")
    parser.add_argument("--features", help="feature cache (.h5) holding the video")
    parser.add_argument("--cache", help="where to keep features extracted from a video file (default: temporary)")
    parser.add_argument("--top-k", type=int, default=5, help="moments to return (default 5)")
    add_weights(parser)
    add_device(parser)
    add_threads(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from tal.api import MomentRetriever

    apply_threads(args)
    retriever = MomentRetriever.from_checkpoint(args.checkpoint, features=args.features, device=device_of(args),
                                                cache=args.cache, weights=args.weights)
    moments = retriever.query(args.video, args.sentence, top_k=args.top_k)
    answer = {"video": args.video, "query": args.sentence, "moments": list(moments)}
    for warning in moments.warnings:
        print(f"tal query: warning: {warning}", file=sys.stderr)
    if moments.warnings:
        answer["warnings"] = list(moments.warnings)
    print(json.dumps(answer))
    return 0
