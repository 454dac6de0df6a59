"""The HTTP query API: `POST /query`, `GET /videos`, `GET /health` over a moment retriever.

`POST /query {"video": vid, "query": str, "top_k": int}` answers `{"moments": [{"start", "end", "score"}]}`
(seconds, best first). Every bad request gets a 4xx `{"error": reason}`: unknown video 404, malformed JSON
400, a body that breaks the rules below 422, an oversized body 413. Request parsing runs concurrently on
the event loop; model calls run in the thread pool, one at a time under a lock, since torch modules are
not safe to call from several threads at once. A retriever with `query_batch` (MomentRetriever) gets
the queries that arrived while the model was busy all at once (micro-batching, `_Batcher`).

The retriever is anything with `videos() -> list[str]` and `query(video, sentence, top_k) -> list[dict]`
(`tal.api.MomentRetriever`), raising `TalInputError` for input it rejects; optionally
`query_batch([(video, sentence, top_k), ...]) -> [moments or TalInputError, ...]`.
"""
# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations (`Request`) at runtime.
import json
import re
import socket
import threading
import time
from typing import Any, Protocol

from tal import __version__
from tal.errors import TalInputError

MAX_QUERY_CHARS = 512
MAX_TOP_K = 100
DEFAULT_TOP_K = 5
MAX_BODY_BYTES = 16 * 1024
QUERY_KEYS = ("video", "query", "top_k")
_WORD = re.compile(r"[^\W_]")  # a letter or digit, in any script


class Retriever(Protocol):
    def videos(self) -> list[str]: ...

    def query(self, video: str, sentence: str, top_k: int = 5) -> list[dict]: ...


class RequestError(Exception):
    """A request the API refuses, with its HTTP status and a reason for the client."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def check_dependencies() -> None:
    """Raise `TalInputError` naming the fix when fastapi or uvicorn is not installed."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise TalInputError(f"the HTTP API needs fastapi and uvicorn ({exc.name} is missing): "
                            "pip install 'tal[serve]'") from None


def parse_query(body: bytes, videos: frozenset[str]) -> tuple[str, str, int]:
    """Validate a `POST /query` body; returns (video, sentence stripped, top_k) or raises `RequestError`."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, a 5000-digit number, [[[[...]]]]
        raise RequestError(400, f"the body is not valid JSON ({type(exc).__name__}: {str(exc)[:200]}); send "
                                '{"video": "<id>", "query": "<sentence>", "top_k": 5}') from None
    if not isinstance(payload, dict):
        raise RequestError(422, f"the body must be a JSON object, got {_json_type(payload)}")
    unknown = sorted(set(payload) - set(QUERY_KEYS))
    if unknown:
        raise RequestError(422, f"unknown field(s) {', '.join(map(repr, unknown))}; "
                                f"the fields are {', '.join(QUERY_KEYS)}")
    for key in ("video", "query"):
        if key not in payload:
            raise RequestError(422, f"missing field {key!r} (a string)")
        if not isinstance(payload[key], str):
            raise RequestError(422, f"{key!r} must be a string, got {_json_type(payload[key])}")
        try:
            payload[key].encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(422, f"{key!r} holds an unpaired surrogate escape: it is not valid Unicode") from None
    video, sentence = payload["video"], payload["query"].strip()
    top_k = payload.get("top_k", DEFAULT_TOP_K)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise RequestError(422, f"'top_k' must be an integer from 1 to {MAX_TOP_K}, got {json.dumps(top_k)}")
    if not sentence:
        raise RequestError(422, "'query' is empty: send a sentence describing the moment")
    if len(sentence) > MAX_QUERY_CHARS:
        raise RequestError(422, f"'query' has {len(sentence)} characters; the limit is {MAX_QUERY_CHARS}")
    if not _WORD.search(sentence):
        raise RequestError(422, f"'query' {sentence!r} has no word in it: send a sentence describing the moment")
    if video not in videos:
        raise RequestError(404, f"unknown video {video[:100]!r}: GET /videos lists the {len(videos)} "
                                "videos this server answers for")
    return video, sentence, top_k


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
             dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def create_app(retriever: Retriever):
    """A FastAPI app answering moment queries with `retriever` (its video list is read once, here)."""
    check_dependencies()
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    video_ids = [str(v) for v in retriever.videos()]
    videos = frozenset(video_ids)
    model_lock = threading.Lock()
    app = FastAPI(title="tal moment retrieval", version=__version__,
                  description="Find the moments of a video that a sentence describes.")

    def run_query(video: str, sentence: str, top_k: int) -> list[dict]:
        with model_lock:
            moments = retriever.query(video, sentence, top_k)
        return _plain(moments)

    batcher = _Batcher(retriever, model_lock) if hasattr(retriever, "query_batch") else None

    @app.exception_handler(RequestError)
    async def _request_error(request, exc: RequestError):
        return JSONResponse({"error": exc.reason}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):  # unknown route, wrong method
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _internal_error(request, exc: Exception):  # a bug, not the client's fault; uvicorn logs it
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)

    @app.get("/health")
    async def health():
        return {"status": "ok", "num_videos": len(video_ids), "version": __version__}

    @app.get("/videos")
    async def list_videos():
        return {"videos": video_ids}

    @app.post("/query", openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "example": {"video": video_ids[0] if video_ids else "vid", "query": "a person opens a door", "top_k": 5}}}}})
    async def query(request: Request):
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise RequestError(413, f"the body is over {MAX_BODY_BYTES} bytes; a query is a few hundred")
        video, sentence, top_k = parse_query(bytes(body), videos)
        try:
            if batcher is not None:
                moments = await batcher.submit(video, sentence, top_k)
            else:
                moments = await run_in_threadpool(run_query, video, sentence, top_k)
        except TalInputError as exc:
            raise RequestError(422, str(exc)) from None
        return JSONResponse({"moments": moments})  # plain floats already: skips FastAPI's response encoding

    return app


def _plain(moments: list[dict]) -> list[dict]:
    return [{"start": float(m["start"]), "end": float(m["end"]), "score": float(m["score"])} for m in moments]


class _Batcher:
    """Micro-batching: queries that arrive while the model is busy are answered together by one
    `retriever.query_batch` call (one forward pass), so 16 waiting clients cost about one batch, not
    16 model calls in a row. Lives on the event loop; model calls run one at a time in the thread pool."""

    def __init__(self, retriever, model_lock: threading.Lock, max_batch: int = 64):
        self.retriever, self.model_lock, self.max_batch = retriever, model_lock, max_batch
        self.pending: list = []
        self.running = False

    async def submit(self, video: str, sentence: str, top_k: int) -> list[dict]:
        import asyncio

        future = asyncio.get_running_loop().create_future()
        self.pending.append(((video, sentence, top_k), future))
        if not self.running:
            self.running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        from starlette.concurrency import run_in_threadpool

        try:
            while self.pending:
                batch, self.pending = self.pending[:self.max_batch], self.pending[self.max_batch:]
                try:
                    results = await run_in_threadpool(self._run, [request for request, _ in batch])
                except Exception as exc:  # a bug: every waiting request gets it (-> 500), the server goes on
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(_plain(result))
        finally:
            self.running = False

    def _run(self, requests: list[tuple[str, str, int]]) -> list:
        with self.model_lock:
            return self.retriever.query_batch(requests)


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on (host, port); port 0 picks a free one. Busy ports raise `TalInputError`.

    Connections made before the server runs wait in the backlog instead of being refused.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets saying so; without it every response
    # waits ~40 ms (Nagle's algorithm vs. delayed ACKs, as uvicorn writes headers and body separately).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's default backlog
    except OSError as exc:
        sock.close()
        raise TalInputError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port or --host") \
            from None
    return sock


def server_url(sock: socket.socket) -> str:
    """http://host:port of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn_server(retriever: Retriever, log_level: str, **config):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(create_app(retriever), log_level=log_level, **config))


def run_server(retriever: Retriever, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
               sock: socket.socket | None = None) -> None:
    """Serve `retriever` over HTTP until interrupted (Ctrl-C / SIGTERM), on `sock` if given (see `bind_socket`)."""
    check_dependencies()
    sock = sock or bind_socket(host, port)
    try:
        _uvicorn_server(retriever, log_level).run(sockets=[sock])
    finally:
        sock.close()


class BackgroundServer:
    """The API served by uvicorn in a daemon thread, for tests, benchmarks and notebooks.

    with BackgroundServer(retriever) as server:   # port 0: a free port
        httpx.get(server.url + "/health")
    """

    def __init__(self, retriever: Retriever, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        check_dependencies()
        self._server = _uvicorn_server(retriever, log_level, log_config=None)  # leave the host's logging alone
        self._sock = bind_socket(host, port)
        self.host, self.port = host, self._sock.getsockname()[1]
        self.url = server_url(self._sock)
        self._thread = threading.Thread(target=self._server.run, kwargs=dict(sockets=[self._sock]),
                                        name=f"tal-serve-{self.port}", daemon=True)

    def start(self, timeout_s: float = 10.0) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            self.stop()
            raise RuntimeError(f"the server on {self.url} did not start within {timeout_s} s")
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask uvicorn to finish in-flight requests and exit; wait for its thread."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._sock.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
