"""`tal serve`: answer sentence queries (a grounding checkpoint) or detect actions (a detection one) over
HTTP, with tal's web page at `/`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tal.cli.common import add_device, add_threads, add_weights, apply_threads, count, device_of

EPILOG = """\
endpoints:
  GET  /        the web page: pick a video, type a sentence (or see the detected actions), play the moments
  POST /query   {"video": VID, "query": "sentence", "top_k": 5}  ->  {"moments": [{"start", "end", "score"}]}
                (grounding; seconds, best first; top_k 1..100, default 5; the sentence at most 512 characters;
                "warnings": [...] when the sentence has no word the model knows)
  POST /detect  {"video": VID, "score_threshold": 0.1, "top_k": 100}  ->  {"detections": [{"label", "score",
                "start", "end"}]}  (detection; top_k 1..1000, default 100)
  GET  /videos  {"videos": [VID, ...]}, the videos of FEATS.h5 it answers for
  GET  /videos/VID        {"video", "duration", "file"}
  GET  /videos/VID/file   the video file (with --videos; range requests, so players can seek)
  POST /uploads?name=F    a new video file as the body (with --uploads); GET /uploads/VID its progress
  GET  /health  {"status": "ok", "num_videos": N, "version": V, "task": ...}
  GET  /docs    the API reference (also /openapi.json)
Bad requests get a 4xx {"error": reason}: 404 unknown video, 400 malformed JSON, 422 bad fields, 413 too large.

examples:
  tal serve --checkpoint work/charades_tan2d/checkpoint_last.pt --features charades_vgg.h5 --videos Charades_v1/
  curl -s localhost:8000/query -d '{"video": "3MSZA", "query": "person opens the door", "top_k": 3}'
  tal serve --checkpoint tal-demo/detection/checkpoint_best.pt --features tal-demo/features.h5 \\
      --videos tal-demo/videos --uploads uploads/ --max-upload-mb 200
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="web page and HTTP API for moment queries or action detection (GET /, POST /query, /detect)",
        description="Serve a trained moment-retrieval or detection checkpoint over HTTP, with a web page at /. "
                    "The model answers one request at a time; requests are parsed concurrently. Stop with Ctrl-C.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="CKPT",
                   help="a grounding or detection checkpoint from 'tal train'")
    p.add_argument("--features", required=True, metavar="FEATS.h5", help="feature cache of the videos to answer for")
    p.add_argument("--videos", metavar="DIR",
                   help="folder of the video files, so the page plays them: files named by video id (any "
                        "folder depth), or as --video-map says; only files under DIR are ever served")
    p.add_argument("--video-map", metavar="JSON", help='{"video id": "path under --videos DIR", ...}')
    p.add_argument("--uploads", metavar="DIR",
                   help="accept new videos (POST /uploads, the page's upload button) and keep them and their "
                        "features in DIR; needs a checkpoint whose features came from a tal backbone")
    p.add_argument("--max-upload-mb", type=float, default=500.0, metavar="MB",
                   help="largest upload accepted (default 500 MB)")
    p.add_argument("--max-upload-s", type=float, default=1800.0, metavar="S",
                   help="longest uploaded video accepted (default 1800 s)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    add_device(p)
    add_threads(p)
    add_weights(p)
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="uvicorn log level (default info: a line per request)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tal.errors import TalInputError
    from tal.serve import bind_socket, check_dependencies, run_server, server_url

    check_dependencies()  # missing packages, missing files and a busy port fail before the slow model load
    for flag, path in (("--checkpoint", args.checkpoint), ("--features", args.features),
                       ("--video-map", args.video_map)):
        if path is not None and not Path(path).is_file():
            raise TalInputError(f"{flag} {path}: no such file")
    if args.video_map and not args.videos:
        raise TalInputError("--video-map needs --videos DIR: its paths are relative to that folder")
    if args.videos and not Path(args.videos).is_dir():
        raise TalInputError(f"--videos {args.videos}: no such folder")
    if args.max_upload_mb <= 0 or args.max_upload_s <= 0:
        raise TalInputError("--max-upload-mb and --max-upload-s must be positive")
    apply_threads(args)
    device = device_of(args)
    sock = bind_socket(args.host, args.port)
    try:
        from tal.api import load_predictor

        print(f"tal serve: loading {args.checkpoint} with {args.features} on {device}", file=sys.stderr)
        model = load_predictor(args.checkpoint, features=args.features, device=device, weights=args.weights)
        if args.uploads:
            from tal.web.uploads import check_extractable

            check_extractable(model)  # before "listening on"
        options = _app_options(args, model.videos())
        shown = f"; {count(len(options['video_files']), 'video file')}" if args.videos else ""
        print(f"tal serve: {len(model.videos())} videos{shown}; listening on {server_url(sock)} "
              f"(docs at /docs); Ctrl-C stops", file=sys.stderr, flush=True)
        run_server(model, log_level=args.log_level, sock=sock, **options)
    finally:
        sock.close()
    return 0


def _app_options(args: argparse.Namespace, ids: list[str]) -> dict:
    """create_app's video_files and upload options from the command line."""
    from tal.web.uploads import UploadLimits
    from tal.web.videos import VideoFiles

    files = VideoFiles.from_folder(args.videos, ids, args.video_map) if args.videos else VideoFiles()
    options: dict = {"video_files": files}
    if args.uploads:
        options["uploads_folder"] = args.uploads
        options["upload_limits"] = UploadLimits(int(args.max_upload_mb * 2**20), float(args.max_upload_s))
    return options


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port number from 0 to 65535")
    return port
