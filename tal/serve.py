"""The HTTP API of `tal serve` and tal's web page over it, for a moment retriever or an action detector.

`POST /query {"video": vid, "query": str, "top_k": int}` answers `{"moments": [{"start", "end", "score"}]}`
(seconds, best first), plus `"warnings": [str]` when the answer needs a caveat; a detector answers
`POST /detect {"video", "score_threshold", "top_k"}` with `{"detections": [{"label", "score", "start",
"end"}]}`. `GET /` is the page (tal/web/static), `GET /videos/{id}` a video's duration and whether its file
plays, `GET /videos/{id}/file` the file (range requests; looked up by id in `VideoFiles`, never a path from
the request), `POST /uploads?name=F` a new video (`tal.web.uploads`). Every bad request gets a 4xx
`{"error": reason}`: unknown video 404, malformed JSON 400, a body that breaks the rules below 422, an
oversized body 413. Request parsing runs concurrently on the event loop; model calls run in the thread
pool, one at a time under a lock, since torch modules are not safe to call from several threads at once. A
retriever with `query_batch` (MomentRetriever) gets the queries that arrived while the model was busy all
at once (micro-batching, `_Batcher`).

The retriever is anything with `videos() -> list[str]` and `query(video, sentence, top_k) -> list[dict]`
(`tal.api.MomentRetriever`), raising `TalInputError` for input it rejects; optionally
`query_batch([(video, sentence, top_k), ...]) -> [moments or TalInputError, ...]`. A detector has
`videos()`, `classes` and `detect(video, score_threshold, top_k)` (`tal.api.ActionDetector`).
"""
# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations (`Request`) at runtime.
import json
import logging
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
MAX_DETECTIONS = 1000
DEFAULT_DETECTIONS = 100
MAX_BODY_BYTES = 16 * 1024
QUERY_KEYS = ("video", "query", "top_k")
DETECT_KEYS = ("video", "score_threshold", "top_k")
QUERY_EXAMPLE = '{"video": "<id>", "query": "<sentence>", "top_k": 5}'
DETECT_EXAMPLE = '{"video": "<id>", "score_threshold": 0.1, "top_k": 100}'
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


def parse_query(body: bytes, videos) -> tuple[str, str, int]:
    """Validate a `POST /query` body; returns (video, sentence stripped, top_k) or raises `RequestError`."""
    payload = _json_object(body, QUERY_KEYS, QUERY_EXAMPLE)
    video, sentence = _string(payload, "video"), _string(payload, "query").strip()
    top_k = _integer(payload, "top_k", DEFAULT_TOP_K, MAX_TOP_K)
    if not sentence:
        raise RequestError(422, "'query' is empty: send a sentence describing the moment")
    if len(sentence) > MAX_QUERY_CHARS:
        raise RequestError(422, f"'query' has {len(sentence)} characters; the limit is {MAX_QUERY_CHARS}")
    if not _WORD.search(sentence):
        raise RequestError(422, f"'query' {sentence!r} has no word in it: send a sentence describing the moment")
    return _known(video, videos), sentence, top_k


def parse_detect(body: bytes, videos) -> tuple[str, float, int]:
    """Validate a `POST /detect` body; returns (video, score_threshold, top_k) or raises `RequestError`."""
    payload = _json_object(body, DETECT_KEYS, DETECT_EXAMPLE)
    video = _string(payload, "video")
    threshold = payload.get("score_threshold", 0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise RequestError(422, f"'score_threshold' must be a number from 0 to 1, got {json.dumps(threshold)}")
    top_k = _integer(payload, "top_k", DEFAULT_DETECTIONS, MAX_DETECTIONS)
    return _known(video, videos), float(threshold), top_k


def _json_object(body: bytes, keys: tuple[str, ...], example: str) -> dict:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, a 5000-digit number, [[[[...]]]]
        raise RequestError(400, f"the body is not valid JSON ({type(exc).__name__}: {str(exc)[:200]}); send "
                                f"{example}") from None
    if not isinstance(payload, dict):
        raise RequestError(422, f"the body must be a JSON object, got {_json_type(payload)}")
    unknown = sorted(set(payload) - set(keys))
    if unknown:
        raise RequestError(422, f"unknown field(s) {', '.join(map(repr, unknown))}; "
                                f"the fields are {', '.join(keys)}")
    return payload


def _string(payload: dict, key: str) -> str:
    if key not in payload:
        raise RequestError(422, f"missing field {key!r} (a string)")
    value = payload[key]
    if not isinstance(value, str):
        raise RequestError(422, f"{key!r} must be a string, got {_json_type(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(422, f"{key!r} holds an unpaired surrogate escape: it is not valid Unicode") from None
    return value


def _integer(payload: dict, key: str, default: int, high: int) -> int:
    value = payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise RequestError(422, f"{key!r} must be an integer from 1 to {high}, got {json.dumps(value)}")
    return value


def _known(video: str, videos) -> str:
    if video not in videos:
        raise RequestError(404, f"unknown video {video[:100]!r}: GET /videos lists the {len(videos)} "
                                "videos this server answers for")
    return video


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
             dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


class Catalog:
    """The video ids a server answers for, in order; uploads add to it while it serves."""

    def __init__(self, ids: list[str]):
        self.ids = [str(v) for v in ids]
        self._known = set(self.ids)

    def add(self, video: str) -> None:
        if video not in self._known:
            self.ids.append(video)
            self._known.add(video)

    def __contains__(self, video: str) -> bool:
        return video in self._known

    def __len__(self) -> int:
        return len(self.ids)


def create_app(model, video_files=None, uploads_folder=None, upload_limits=None):
    """A FastAPI app answering with `model`, a retriever (`POST /query`) or a detector (`POST /detect`), and
    serving tal's web page. video_files: a `tal.web.videos.VideoFiles` the page plays; uploads_folder
    (with `tal.web.uploads.UploadLimits`): where `POST /uploads` keeps new videos (None: no uploads)."""
    check_dependencies()
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect

    from tal.web import routes, schema
    from tal.web.videos import VideoFiles

    detector = hasattr(model, "detect")
    catalog = Catalog(model.videos())
    files = video_files if video_files is not None else VideoFiles()
    model_lock = threading.Lock()
    app = FastAPI(title="tal " + ("action detection" if detector else "moment retrieval"), version=__version__,
                  description="Find where things happen in long videos. GET / is the web page over this API.",
                  docs_url=None, redoc_url=None)

    @app.exception_handler(RequestError)
    async def _request_error(request, exc: RequestError):
        return JSONResponse({"error": exc.reason}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):  # unknown route, wrong method
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc: RequestValidationError):  # a declared parameter (e.g. ?name=)
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("query", "path"))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.exception_handler(ClientDisconnect)
    async def _client_left(request, exc: ClientDisconnect):  # nobody to answer: one log line, no traceback
        logging.getLogger("tal.serve").info("client left during %s %s", request.method, request.url.path)
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def _internal_error(request, exc: Exception):  # a bug, not the client's fault; uvicorn logs it
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)

    uploads = None
    if uploads_folder is not None:
        from tal.web.uploads import UploadLimits, Uploads

        def ready(video: str, path) -> None:
            files.add(video, path)
            catalog.add(video)

        uploads = Uploads(model, uploads_folder, upload_limits or UploadLimits(), model_lock, ready)
        files.add_root(uploads.folder)
        uploads.restore()

    @app.get("/health", response_model=schema.Health)
    async def health():
        info = {"status": "ok", "num_videos": len(catalog), "version": __version__,
                "task": "detection" if detector else "grounding"}
        if detector:
            info["classes"] = list(model.classes)
        if uploads is not None:
            info["uploads"] = uploads.limits.to_json()
        return JSONResponse(info)

    @app.get("/videos", response_model=schema.VideoList)
    async def list_videos():
        return JSONResponse({"videos": catalog.ids})

    example_video = catalog.ids[0] if catalog.ids else "vid"
    if detector:
        def run_detect(video: str, threshold: float, top_k: int) -> dict:
            with model_lock:
                found = model.detect(video, threshold, top_k)
            return {"detections": [{"label": d["label"], "score": float(d["score"]), "start": float(d["start"]),
                                    "end": float(d["end"])} for d in found]}

        @app.post("/detect", response_model=schema.DetectAnswer, responses=schema.ERRORS,
                  openapi_extra=_body_schema(schema.DetectRequest, {"video": example_video, "score_threshold": 0.1,
                                                                    "top_k": 20}))
        async def detect(request: Request):
            video, threshold, top_k = parse_detect(await _body(request), catalog)
            try:
                return JSONResponse(await run_in_threadpool(run_detect, video, threshold, top_k))
            except TalInputError as exc:
                raise RequestError(422, str(exc)) from None

        _other_task(app, "/query", "a detection checkpoint: POST /detect " + DETECT_EXAMPLE)
    else:
        def run_query(video: str, sentence: str, top_k: int) -> dict:
            with model_lock:
                moments = model.query(video, sentence, top_k)
            return _answer(moments)

        batcher = _Batcher(model, model_lock) if hasattr(model, "query_batch") else None

        @app.post("/query", response_model=schema.QueryAnswer, responses=schema.ERRORS,
                  openapi_extra=_body_schema(schema.QueryRequest, {"video": example_video,
                                                                   "query": "a person opens a door", "top_k": 5}))
        async def query(request: Request):
            video, sentence, top_k = parse_query(await _body(request), catalog)
            try:
                if batcher is not None:
                    answer = await batcher.submit(video, sentence, top_k)
                else:
                    answer = await run_in_threadpool(run_query, video, sentence, top_k)
            except TalInputError as exc:
                raise RequestError(422, str(exc)) from None
            return JSONResponse(answer)  # plain floats already: skips FastAPI's response encoding

        _other_task(app, "/detect", "a grounding checkpoint: POST /query " + QUERY_EXAMPLE)

    def duration_of(video: str):
        if not hasattr(model, "duration_of"):
            return None
        with model_lock:
            return model.duration_of(video)

    routes.add_video_routes(app, catalog, files, duration_of)
    if uploads is not None:
        routes.add_upload_routes(app, uploads, catalog)
    routes.add_page_routes(app)
    return app


async def _body(request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"the body is over {limit} bytes; a query is a few hundred")
    return bytes(body)


def _body_schema(model, example: dict) -> dict:
    """OpenAPI for a JSON body the endpoint parses itself (see tal.web.schema)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": model.model_json_schema(), "example": example}}}}


def _other_task(app, path: str, holds: str) -> None:
    """`path` of the other task answers 404 saying what this server does serve."""
    @app.post(path, include_in_schema=False)
    async def other():
        raise RequestError(404, f"{path} is not served here: this server holds {holds}")


def _answer(moments) -> dict:
    """The JSON answer to a query: plain floats, and the retriever's warnings when there are any."""
    answer: dict = {"moments": [{"start": float(m["start"]), "end": float(m["end"]), "score": float(m["score"])}
                                for m in moments]}
    warnings = getattr(moments, "warnings", None)
    if warnings:
        answer["warnings"] = list(warnings)
    return answer


class _Batcher:
    """Micro-batching: queries that arrive while the model is busy are answered together by one
    `retriever.query_batch` call (one forward pass), so 16 waiting clients cost about one batch, not
    16 model calls in a row. Lives on the event loop; model calls run one at a time in the thread pool."""

    def __init__(self, retriever, model_lock: threading.Lock, max_batch: int = 64):
        self.retriever, self.model_lock, self.max_batch = retriever, model_lock, max_batch
        self.pending: list = []
        self.running = False

    async def submit(self, video: str, sentence: str, top_k: int) -> dict:
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
                        future.set_result(_answer(result))
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


def _uvicorn_server(model, log_level: str, app_options: dict | None = None, **config):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(create_app(model, **(app_options or {})), log_level=log_level, **config))


def run_server(model, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
               sock: socket.socket | None = None, **app_options) -> None:
    """Serve `model` over HTTP until interrupted (Ctrl-C / SIGTERM), on `sock` if given (see `bind_socket`);
    app_options go to `create_app` (video_files, uploads_folder, upload_limits)."""
    check_dependencies()
    sock = sock or bind_socket(host, port)
    try:
        _uvicorn_server(model, log_level, app_options).run(sockets=[sock])
    finally:
        sock.close()


class BackgroundServer:
    """The API served by uvicorn in a daemon thread, for tests, benchmarks and notebooks.

    with BackgroundServer(retriever) as server:   # port 0: a free port
        httpx.get(server.url + "/health")
    """

    def __init__(self, model, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning", **app_options):
        check_dependencies()
        self._server = _uvicorn_server(model, log_level, app_options, log_config=None)  # leave the host's logging
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
