"""`tal serve`: answer moment queries over HTTP with a trained grounding checkpoint."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tal.cli.common import add_device, add_threads, add_weights, apply_threads, device_of

EPILOG = """\
endpoints:
  POST /query   {"video": VID, "query": "sentence", "top_k": 5}  ->  {"moments": [{"start", "end", "score"}]}
                (seconds, best first; top_k 1..100, default 5; the sentence at most 512 characters)
  GET  /videos  {"videos": [VID, ...]}, the videos of FEATS.h5 it answers for
  GET  /health  {"status": "ok", "num_videos": N, "version": V}
  GET  /docs    interactive documentation
Bad requests get a 4xx {"error": reason}: 404 unknown video, 400 malformed JSON, 422 bad fields.

example:
  tal serve --checkpoint work/charades_tan2d/checkpoint_last.pt --features charades_vgg.h5 --port 8000
  curl -s localhost:8000/query -d '{"video": "3MSZA", "query": "person opens the door", "top_k": 3}'
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="HTTP API for moment queries (POST /query, GET /videos, GET /health)",
        description="Serve a trained moment-retrieval checkpoint over HTTP. The model answers one query at a "
                    "time; requests are parsed concurrently. Stop with Ctrl-C.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="a grounding checkpoint from 'tal train'")
    p.add_argument("--features", required=True, metavar="FEATS.h5", help="feature cache of the videos to answer for")
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
    for flag, path in (("--checkpoint", args.checkpoint), ("--features", args.features)):
        if not Path(path).is_file():
            raise TalInputError(f"{flag} {path}: no such file")
    apply_threads(args)
    device = device_of(args)
    sock = bind_socket(args.host, args.port)
    try:
        from tal.api import MomentRetriever

        print(f"tal serve: loading {args.checkpoint} with {args.features} on {device}", file=sys.stderr)
        retriever = MomentRetriever.from_checkpoint(args.checkpoint, features=args.features, device=device,
                                                    weights=args.weights)
        print(f"tal serve: {len(retriever.videos())} videos; listening on {server_url(sock)} "
              f"(docs at /docs); Ctrl-C stops", file=sys.stderr, flush=True)
        run_server(retriever, log_level=args.log_level, sock=sock)
    finally:
        sock.close()
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port number from 0 to 65535")
    return port
