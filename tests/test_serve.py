"""The HTTP query API: a real uvicorn server over a fake retriever, the app in-process, and `tal serve`."""
from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from tal.cli.main import main  # noqa: E402
from tal.errors import TalInputError  # noqa: E402
from tal.serve import BackgroundServer, bind_socket, create_app  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GATE_SENTENCE = "wait for the gate"


class FakeRetriever:
    """Moment i of a query: [2i, 2i + words] s, score 2^-i (numpy floats, as a model returns them).

    Counts calls inside `query` that overlap, to check the server's lock; the sentence GATE_SENTENCE
    blocks until `gate` is set; "explode" is a bug (RuntimeError); "zzz" is refused (TalInputError).
    """

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.gate = threading.Event()
        self.calls: list[tuple[str, str, int]] = []
        self.active = self.max_active = 0
        self._count_lock = threading.Lock()

    def videos(self) -> list[str]:
        return ["v_cooking", "v_sports"]

    def query(self, video: str, sentence: str, top_k: int = 5) -> list[dict]:
        if video not in self.videos():
            raise TalInputError(f"unknown video {video!r}")
        if sentence == "zzz":
            raise TalInputError("'zzz' has no word in the vocabulary")
        if sentence == "explode":
            raise RuntimeError("a bug in the model")
        with self._count_lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.calls.append((video, sentence, top_k))
        try:
            if sentence == GATE_SENTENCE:
                self.gate.wait(10)
            time.sleep(self.delay_s)
            words = len(sentence.split())
            return [{"start": np.float32(2 * i), "end": np.float32(2 * i + words), "score": np.float32(0.5 ** i)}
                    for i in range(top_k)]
        finally:
            with self._count_lock:
                self.active -= 1


GOOD = {"video": "v_cooking", "query": "a person opens the door", "top_k": 3}
GOOD_MOMENTS = [{"start": 0.0, "end": 5.0, "score": 1.0}, {"start": 2.0, "end": 7.0, "score": 0.5},
                {"start": 4.0, "end": 9.0, "score": 0.25}]

# (id, body: dict (sent as JSON) or bytes (sent raw), status, text the error must contain)
BAD_REQUESTS = [
    ("unknown-video", {"video": "nope", "query": "a dog"}, 404,
     "unknown video 'nope': GET /videos lists the 2 videos"),
    ("empty-query", {"video": "v_cooking", "query": ""}, 422, "'query' is empty"),
    ("blank-query", {"video": "v_cooking", "query": " \t\n"}, 422, "'query' is empty"),
    ("no-word", {"video": "v_cooking", "query": "?! ..."}, 422, "has no word in it"),
    ("underscores-only", {"video": "v_cooking", "query": "___"}, 422, "has no word in it"),
    ("overlong-query", {"video": "v_cooking", "query": "a" * 513}, 422, "513 characters; the limit is 512"),
    ("top_k-0", {**GOOD, "top_k": 0}, 422, "'top_k' must be an integer from 1 to 100, got 0"),
    ("top_k-101", {**GOOD, "top_k": 101}, 422, "'top_k' must be an integer from 1 to 100, got 101"),
    ("top_k-str", {**GOOD, "top_k": "x"}, 422, 'got "x"'),
    ("top_k-digit-str", {**GOOD, "top_k": "5"}, 422, 'got "5"'),
    ("top_k-float", {**GOOD, "top_k": 2.5}, 422, "got 2.5"),
    ("top_k-bool", {**GOOD, "top_k": True}, 422, "got true"),
    ("top_k-null", {**GOOD, "top_k": None}, 422, "got null"),
    ("missing-video", {"query": "a dog"}, 422, "missing field 'video'"),
    ("missing-query", {"video": "v_cooking"}, 422, "missing field 'query'"),
    ("video-number", {"video": 5, "query": "a dog"}, 422, "'video' must be a string, got a number"),
    ("query-array", {"video": "v_cooking", "query": ["a", "dog"]}, 422, "'query' must be a string, got an array"),
    ("unknown-field", {**GOOD, "topk": 3}, 422, "unknown field(s) 'topk'; the fields are video, query, top_k"),
    ("body-array", [GOOD], 422, "the body must be a JSON object, got an array"),
    ("body-string", "a dog", 422, "the body must be a JSON object, got a string"),
    ("not-json", b"video=v_cooking&query=dog", 400, "the body is not valid JSON"),
    ("empty-body", b"", 400, "the body is not valid JSON"),
    ("not-utf8", b'{"video": "\xff\xfe"}', 400, "the body is not valid JSON (UnicodeDecodeError"),
    ("lone-surrogate", b'{"video": "v_cooking", "query": "a \\ud800 dog"}', 422, "unpaired surrogate"),
    ("deep-nesting", b"[" * 10_000, 400, "the body is not valid JSON (RecursionError"),
    ("huge-number", b'{"video": "v_cooking", "query": "dog", "top_k": 1' + b"0" * 5000 + b"}", 400,
     "the body is not valid JSON (ValueError"),
    ("oversized-body", json.dumps({**GOOD, "query": "a" * 20_000}).encode(), 413, "over 16384 bytes"),
    ("refused-by-model", {"video": "v_cooking", "query": "zzz"}, 422, "'zzz' has no word in the vocabulary"),
]


def post(client, body, path: str = "/query"):
    if isinstance(body, bytes):
        return client.post(path, content=body, headers={"content-type": "application/json"})
    return client.post(path, json=body)


@pytest.fixture(scope="module")
def fake() -> FakeRetriever:
    return FakeRetriever(delay_s=0.002)


@pytest.fixture(scope="module")
def server(fake):
    """A real uvicorn server on a free port of 127.0.0.1, in a thread; stopped (and checked) at the end."""
    server = BackgroundServer(fake).start()
    assert server.url == f"http://127.0.0.1:{server.port}" and server.port > 0
    yield server
    server.stop()
    assert not server.running, "uvicorn's thread did not finish"
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/health", timeout=2)


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def app_client():
    with TestClient(create_app(FakeRetriever()), raise_server_exceptions=False) as client:
        yield client


# --- the real server -------------------------------------------------------------------------------------------

def test_health_and_videos(client):
    from tal import __version__

    assert client.get("/health").json() == {"status": "ok", "num_videos": 2, "version": __version__,
                                            "task": "grounding"}
    response = client.get("/videos")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == {"videos": ["v_cooking", "v_sports"]}


def test_good_query_exact_json(client, fake):
    response = client.post("/query", json={**GOOD, "query": "  a person opens the door\n"})
    assert response.status_code == 200
    assert response.json() == {"moments": GOOD_MOMENTS}
    assert fake.calls[-1] == ("v_cooking", "a person opens the door", 3)  # stripped before the model sees it


def test_top_k_defaults_to_5_and_limits_are_inclusive(client, fake):
    assert len(client.post("/query", json={"video": "v_sports", "query": "dog"}).json()["moments"]) == 5
    assert len(client.post("/query", json={**GOOD, "top_k": 1}).json()["moments"]) == 1
    assert len(client.post("/query", json={**GOOD, "top_k": 100}).json()["moments"]) == 100
    longest = client.post("/query", json={**GOOD, "query": "a" * 512, "top_k": 1})
    assert longest.json() == {"moments": [{"start": 0.0, "end": 1.0, "score": 1.0}]}
    assert fake.calls[-1] == ("v_cooking", "a" * 512, 1)


def test_bad_requests_get_4xx_json_and_the_server_survives(client, fake):
    calls = len(fake.calls)
    for name, body, status, text in BAD_REQUESTS:
        response = post(client, body)
        assert response.status_code == status, (name, response.text)
        assert response.headers["content-type"] == "application/json", name
        assert text in response.json()["error"], (name, response.json())
    assert len(fake.calls) == calls, "only valid requests reach the model"
    assert client.get("/health").status_code == 200
    assert client.post("/query", json=GOOD).json() == {"moments": GOOD_MOMENTS}


def test_unknown_route_and_wrong_method_are_json(client):
    assert (client.get("/nope").status_code, client.get("/nope").json()) == (404, {"error": "Not Found"})
    response = client.get("/query")
    assert response.status_code == 405 and response.json() == {"error": "Method Not Allowed"}
    assert response.headers["allow"] == "POST"


def test_16_concurrent_clients_all_succeed_one_model_call_at_a_time(server, fake):
    sentences = ["dog", "a dog runs", "two people shake hands", "the man opens the fridge door"]

    def one_client(index: int) -> list[tuple[int, dict, dict]]:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            results = []
            for j in range(8):
                body = {"video": ["v_cooking", "v_sports"][index % 2], "query": sentences[(index + j) % 4],
                        "top_k": 1 + (index + j) % 7}
                response = client.post("/query", json=body)
                results.append((response.status_code, body, response.json()))
            return results

    fake.max_active = 0
    with ThreadPoolExecutor(16) as pool:
        results = [r for batch in pool.map(one_client, range(16)) for r in batch]
    assert len(results) == 128
    for status, body, answer in results:
        words = len(body["query"].split())
        assert status == 200
        assert answer == {"moments": [{"start": 2.0 * i, "end": 2.0 * i + words, "score": 0.5 ** i}
                                      for i in range(body["top_k"])]}
    assert fake.max_active == 1, "the model was called from two threads at once"


def test_requests_are_parsed_while_the_model_is_busy(server, fake):
    """A query holding the model lock does not stop /health, /videos or the rejection of bad input."""
    fake.gate.clear()
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(httpx.post, server.url + "/query", json={"video": "v_sports", "query": GATE_SENTENCE},
                           timeout=30)
        deadline = time.monotonic() + 5
        while fake.active == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert fake.active == 1, "the slow query never reached the model"
        with httpx.Client(base_url=server.url, timeout=2) as client:
            assert client.get("/health").status_code == 200
            assert client.get("/videos").status_code == 200
            assert client.post("/query", json={**GOOD, "top_k": 0}).status_code == 422
            assert client.post("/query", json={"video": "nope", "query": "a dog"}).status_code == 404
        assert not slow.done()
        fake.gate.set()
        assert slow.result().json()["moments"][0] == {"start": 0.0, "end": 4.0, "score": 1.0}


def test_responses_are_not_held_back_by_nagle(server, client):
    """bind_socket makes an IPPROTO_TCP socket, so asyncio sets TCP_NODELAY on each connection; with a
    protocol-0 socket every keep-alive response waited for a delayed ACK (>= 40 ms on Linux)."""
    sock = bind_socket("127.0.0.1", 0)
    assert sock.proto == socket.IPPROTO_TCP
    sock.close()
    client.get("/health")
    times_ms = []
    for _ in range(15):
        start = time.perf_counter()
        assert client.post("/query", json=GOOD).status_code == 200
        times_ms.append(1000 * (time.perf_counter() - start))
    assert sorted(times_ms)[7] < 35, times_ms


def test_busy_port_is_a_clear_input_error(server):
    with pytest.raises(TalInputError, match=rf"cannot listen on 127.0.0.1:{server.port} .*choose another --port"):
        bind_socket("127.0.0.1", server.port)
    with pytest.raises(TalInputError, match="cannot listen on"):
        BackgroundServer(FakeRetriever(), port=server.port)


# --- the app in-process ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,body,status,text", BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS])
def test_bad_request(app_client, name, body, status, text):
    response = post(app_client, body)
    assert response.status_code == status
    assert text in response.json()["error"]


def test_model_bug_is_a_json_500_and_the_app_survives(app_client):
    response = app_client.post("/query", json={"video": "v_cooking", "query": "explode"})
    assert response.status_code == 500
    assert response.json() == {"error": "internal error (RuntimeError); see the server log"}
    assert app_client.post("/query", json=GOOD).json() == {"moments": GOOD_MOMENTS}


def test_openapi_documents_the_endpoints(app_client):
    spec = app_client.get("/openapi.json").json()
    paths = spec["paths"]
    assert set(paths) == {"/query", "/videos", "/health", "/videos/{video}", "/videos/{video}/file"}
    body = paths["/query"]["post"]["requestBody"]["content"]["application/json"]
    assert body["example"]["video"] == "v_cooking"
    assert body["schema"]["required"] == ["video", "query"] and body["schema"]["additionalProperties"] is False
    assert body["schema"]["properties"]["top_k"] | {"description": ""} == {
        "type": "integer", "minimum": 1, "maximum": 100, "default": 5, "title": "Top K", "description": ""}
    responses = paths["/query"]["post"]["responses"]
    assert responses["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/QueryAnswer"}
    for status in ("400", "404", "413", "422"):
        assert responses[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorAnswer"}, status
    answer = spec["components"]["schemas"]["QueryAnswer"]["properties"]
    assert set(answer) == {"moments", "warnings"}


def test_declared_schema_accepts_what_the_parser_accepts():
    """tal.web.schema.QueryRequest (documentation) and parse_query (the hot path) agree on every case."""
    from pydantic import ValidationError

    from tal.serve import RequestError, parse_query
    from tal.web.schema import QueryRequest

    videos = frozenset(FakeRetriever().videos())
    field_errors = [(name, body) for name, body, status, _ in BAD_REQUESTS
                    if status == 422 and name not in ("refused-by-model", "lone-surrogate", "blank-query")]
    assert len(field_errors) >= 15
    for name, body in field_errors:
        with pytest.raises(RequestError):
            parse_query(json.dumps(body).encode(), videos)
        with pytest.raises(ValidationError):
            QueryRequest.model_validate_json(json.dumps(body))
            pytest.fail(f"the schema accepts {name}")
    for body in (GOOD, {"video": "v_sports", "query": "a" * 512}, {**GOOD, "top_k": 100}):
        parse_query(json.dumps(body).encode(), videos)
        QueryRequest.model_validate_json(json.dumps(body))


def test_docs_page_is_served_without_other_hosts(app_client):
    page = app_client.get("/docs")
    assert page.status_code == 200 and "/static/docs.js" in page.text
    for asset in ("/static/docs.js", "/static/app.css", "/static/docs.css"):
        assert app_client.get(asset).status_code == 200, asset
    assert "http" not in page.text.replace("http-equiv", "")  # every script and style from this server


def test_missing_fastapi_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi -> ImportError
    with pytest.raises(TalInputError, match=r"pip install 'tal\[serve\]'"):
        create_app(FakeRetriever())


# --- tal serve -------------------------------------------------------------------------------------------------

def test_cli_missing_checkpoint_exits_2(tmp_path, capsys):
    feats = tmp_path / "feats.h5"
    feats.write_bytes(b"")
    assert main(["serve", "--checkpoint", str(tmp_path / "nope.pt"), "--features", str(feats)]) == 2
    assert capsys.readouterr().err.strip() == f"tal serve: error: --checkpoint {tmp_path / 'nope.pt'}: no such file"


def test_cli_busy_port_exits_2_before_loading_the_model(tmp_path, capsys, server, monkeypatch):
    monkeypatch.setitem(sys.modules, "tal.api", None)  # loading the model would fail differently
    (tmp_path / "ckpt.pt").write_bytes(b"")
    (tmp_path / "feats.h5").write_bytes(b"")
    code = main(["serve", "--checkpoint", str(tmp_path / "ckpt.pt"), "--features", str(tmp_path / "feats.h5"),
                 "--port", str(server.port)])
    assert code == 2
    assert f"tal serve: error: cannot listen on 127.0.0.1:{server.port}" in capsys.readouterr().err


def test_cli_bad_port_is_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--checkpoint", "c.pt", "--features", "f.h5", "--port", "70000"])
    assert exit_info.value.code == 2
    assert "expected a port number from 0 to 65535" in capsys.readouterr().err


CLI_SCRIPT = """
import sys, types
sys.path.insert(0, {tests!r})
from test_serve import FakeRetriever
api = types.ModuleType("tal.api")
class MomentRetriever(FakeRetriever):
    @classmethod
    def from_checkpoint(cls, checkpoint, features=None, device="cpu", weights=None):
        print("loaded", checkpoint, features, device, file=sys.stderr, flush=True)
        return cls()
api.MomentRetriever = MomentRetriever
api.load_predictor = MomentRetriever.from_checkpoint
sys.modules["tal.api"] = api
from tal.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_cli_serves_until_interrupted(tmp_path):
    """`tal serve` end to end in a subprocess (the retriever faked), stopped with Ctrl-C (SIGINT)."""
    (tmp_path / "ckpt.pt").write_bytes(b"")
    (tmp_path / "feats.h5").write_bytes(b"")
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI_SCRIPT.format(tests=str(REPO / "tests")), "serve", "--checkpoint",
         str(tmp_path / "ckpt.pt"), "--features", str(tmp_path / "feats.h5"), "--port", "0", "--device", "cpu"],
        stderr=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # as from a terminal: a runner that starts the tests in the background (`cmd &` in a script)
        # leaves SIGINT ignored, and the child would inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr] + [lines.put(None)], daemon=True).start()
    try:
        startup = ""
        while "listening on" not in startup:
            line = lines.get(timeout=30)
            assert line is not None, f"tal serve exited with {proc.wait()}:\n{startup}"
            startup += line
        assert startup.splitlines()[:2] == [
            f"tal serve: loading {tmp_path / 'ckpt.pt'} with {tmp_path / 'feats.h5'} on cpu",
            f"loaded {tmp_path / 'ckpt.pt'} {tmp_path / 'feats.h5'} cpu"]
        assert startup.splitlines()[2].startswith("tal serve: 2 videos; listening on http://127.0.0.1:")
        assert startup.splitlines()[2].endswith(" (docs at /docs); Ctrl-C stops")
        url = startup.split("listening on ")[1].split()[0]
        assert httpx.post(url + "/query", json=GOOD, timeout=10).json() == {"moments": GOOD_MOMENTS}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 130
        rest = "".join(iter(lambda: lines.get(timeout=5), None))
        assert rest.rstrip().endswith("tal serve: interrupted"), rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class BatchingRetriever(FakeRetriever):
    """FakeRetriever with `query_batch`: records each batch's size; per-request errors in place."""

    def __init__(self, delay_s: float = 0.05):
        super().__init__(delay_s=0.0)
        self.batch_delay_s = delay_s
        self.batch_sizes: list[int] = []

    def query_batch(self, requests):
        self.batch_sizes.append(len(requests))
        time.sleep(self.batch_delay_s)  # the model is busy: later requests queue up meanwhile
        results = []
        for video, sentence, top_k in requests:
            try:
                results.append(self.query(video, sentence, top_k))
            except TalInputError as exc:
                results.append(exc)
        return results


def test_waiting_queries_are_answered_in_one_batch():
    retriever = BatchingRetriever()
    expected = FakeRetriever()
    with BackgroundServer(retriever) as server, httpx.Client(base_url=server.url) as http:
        def ask(i):
            sentence = "zzz" if i == 7 else f"query number {i} " + "word " * (i % 4)
            return i, http.post("/query", json={"video": "v_sports", "query": sentence, "top_k": 1 + i % 5})

        with ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(ask, range(48)))
    for i, reply in replies:
        if i == 7:  # refused alone; the queries batched with it are answered
            assert reply.status_code == 422 and "vocabulary" in reply.json()["error"]
            continue
        sentence = f"query number {i} " + "word " * (i % 4)
        assert reply.status_code == 200
        assert reply.json()["moments"] == [
            {k: float(v) for k, v in m.items()} for m in expected.query("v_sports", sentence, 1 + i % 5)]
    assert sum(retriever.batch_sizes) == 48
    assert max(retriever.batch_sizes) > 1 and len(retriever.batch_sizes) < 48
    assert retriever.max_active == 1  # batches never overlap


# --- warnings, /detect, video files ----------------------------------------------------------------------------

class WarningRetriever(FakeRetriever):
    """Answers as FakeRetriever, as `tal.api.Moments` with a warning for the sentence "zebras juggle"."""

    def query(self, video: str, sentence: str, top_k: int = 5):
        from tal.api import Moments

        moments = super().query(video, sentence, top_k)
        return Moments(moments, ["no known word"] if sentence == "zebras juggle" else [])


def test_answers_carry_the_retrievers_warnings():
    with TestClient(create_app(WarningRetriever())) as client:
        warned = client.post("/query", json={"video": "v_sports", "query": "zebras juggle", "top_k": 1}).json()
        assert warned == {"moments": [{"start": 0.0, "end": 2.0, "score": 1.0}], "warnings": ["no known word"]}
        assert client.post("/query", json=GOOD).json() == {"moments": GOOD_MOMENTS}  # no empty list


class FakeDetector:
    """Detections i = 0..9 of class "jump" / "run" (alternating), score 0.9 - 0.1 i, at [i, i + 1] s."""

    classes = ["jump", "run"]

    def videos(self) -> list[str]:
        return ["v_cooking", "v_sports"]

    def detect(self, video: str, score_threshold: float = 0.0, top_k: int | None = None) -> list[dict]:
        found = [{"label": self.classes[i % 2], "score": np.float32(0.9 - 0.1 * i), "start": np.float64(i),
                  "end": i + 1.0} for i in range(10) if 0.9 - 0.1 * i >= score_threshold]
        return found[:top_k]

    def duration_of(self, video: str) -> float:
        return 12.5


@pytest.fixture(scope="module")
def detect_client():
    with TestClient(create_app(FakeDetector()), raise_server_exceptions=False) as client:
        yield client


def test_detect_answers_and_refusals(detect_client):
    reply = detect_client.post("/detect", json={"video": "v_sports", "score_threshold": 0.55, "top_k": 2})
    assert reply.status_code == 200
    assert reply.json() == {"detections": [{"label": "jump", "score": pytest.approx(0.9), "start": 0.0, "end": 1.0},
                                           {"label": "run", "score": pytest.approx(0.8), "start": 1.0, "end": 2.0}]}
    assert len(detect_client.post("/detect", json={"video": "v_sports"}).json()["detections"]) == 10
    for body, status, text in [
            ({"video": "nope"}, 404, "unknown video 'nope': GET /videos lists the 2 videos"),
            ({"video": "v_sports", "score_threshold": 1.5}, 422, "'score_threshold' must be a number from 0 to 1, got 1.5"),
            ({"video": "v_sports", "score_threshold": "0.5"}, 422, 'got "0.5"'),
            ({"video": "v_sports", "score_threshold": True}, 422, "got true"),
            ({"video": "v_sports", "top_k": 0}, 422, "'top_k' must be an integer from 1 to 1000, got 0"),
            ({"video": "v_sports", "query": "a dog"}, 422,
             "unknown field(s) 'query'; the fields are video, score_threshold, top_k"),
            (b"{", 400, "the body is not valid JSON")]:
        response = post(detect_client, body, "/detect")
        assert response.status_code == status and text in response.json()["error"], (body, response.text)
    wrong = detect_client.post("/query", json=GOOD)
    assert wrong.status_code == 404 and wrong.json()["error"].startswith(
        "/query is not served here: this server holds a detection checkpoint: POST /detect")
    health = detect_client.get("/health").json()
    assert health["task"] == "detection" and health["classes"] == ["jump", "run"]
    assert detect_client.get("/videos/v_sports").json() == {"video": "v_sports", "duration": 12.5, "file": False}
    paths = detect_client.get("/openapi.json").json()["paths"]
    assert "/detect" in paths and "/query" not in paths


def test_video_files_are_matched_by_stem_and_stay_under_the_folder(tmp_path):
    from tal.web.videos import VideoFiles

    root = tmp_path / "videos"
    (root / "deep" / "er").mkdir(parents=True)
    (root / "v_cooking.mp4").write_bytes(b"cooking")
    (root / "deep" / "er" / "v_sports.webm").write_bytes(b"sports")
    (root / "other.mp4").write_bytes(b"not an id")
    (tmp_path / "secret.mp4").write_bytes(b"outside")
    (root / "v_link.mp4").symlink_to(tmp_path / "secret.mp4")
    files = VideoFiles.from_folder(root, ["v_cooking", "v_sports", "v_none"])
    assert files.files == {"v_cooking": (root / "v_cooking.mp4").resolve(),
                           "v_sports": (root / "deep" / "er" / "v_sports.webm").resolve()}
    with pytest.raises(TalInputError, match="the video file of 'v_link' is not under"):
        VideoFiles.from_folder(root, ["v_link"])
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"v_cooking": "other.mp4"}))
    assert VideoFiles.from_folder(root, [], mapping).files == {"v_cooking": (root / "other.mp4").resolve()}
    for escape in ("../secret.mp4", str(tmp_path / "secret.mp4")):
        mapping.write_text(json.dumps({"v_cooking": escape}))
        with pytest.raises(TalInputError, match="is not under"):
            VideoFiles.from_folder(root, [], mapping)
    mapping.write_text("[1, 2]")
    with pytest.raises(TalInputError, match="expected a JSON object"):
        VideoFiles.from_folder(root, [], mapping)


def test_video_file_route_serves_only_mapped_ids(tmp_path):
    from tal.web.videos import VideoFiles

    (tmp_path / "v_cooking.mp4").write_bytes(bytes(range(256)) * 40)
    files = VideoFiles.from_folder(tmp_path, ["v_cooking"])
    with TestClient(create_app(FakeRetriever(), video_files=files)) as client:
        assert client.get("/videos/v_cooking").json() == {"video": "v_cooking", "duration": None, "file": True}
        part = client.get("/videos/v_cooking/file", headers={"Range": "bytes=5000-5009"})
        assert part.status_code == 206 and part.content == (bytes(range(256)) * 40)[5000:5010]
        missing = client.get("/videos/v_sports/file")
        assert missing.status_code == 404 and missing.json()["error"].startswith("no video file for 'v_sports'")
        for bad in ("/videos/..%2Fv_cooking.mp4/file", "/videos/%2Fetc%2Fpasswd/file", "/videos/v_cooking.mp4/file"):
            refused = client.get(bad)
            assert refused.status_code == 404 and refused.json()["error"].startswith("unknown video"), bad


def test_every_static_file_is_package_data():
    """A non-editable install carries the page: setup.cfg's [options.package_data] globs cover tal/web/static."""
    import configparser
    import fnmatch

    from tal.web import STATIC

    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    globs = [g.strip() for g in config["options.package_data"]["tal.web"].split(",")]
    files = [p.relative_to(STATIC.parent).as_posix() for p in STATIC.iterdir()]
    assert {"static/index.html", "static/app.js", "static/app.css", "static/docs.html"} <= set(files)
    assert [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)] == []


def test_uploads_need_a_checkpoint_whose_features_a_backbone_makes(tmp_path):
    class SyntheticFeatures(FakeRetriever):
        checkpoint, settings = "x.pt", {"backbone": "synthetic_grounding"}

        def can_extract(self) -> bool:
            return False

    with pytest.raises(TalInputError, match="--uploads needs a checkpoint whose features came from a tal backbone; "
                                            "x.pt was trained on 'synthetic_grounding' features"):
        create_app(SyntheticFeatures(), uploads_folder=tmp_path / "uploads")
    assert not (tmp_path / "uploads").exists()


def test_a_client_leaving_mid_body_costs_one_log_line_not_a_traceback(server, client, caplog):
    """Headers promise 100 kB, 10 bytes come, the socket closes: no traceback in the log; the server goes on."""
    import logging
    import socket as socket_module

    with caplog.at_level(logging.INFO):
        sock = socket_module.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"POST /query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000\r\n\r\n{\"video\": ")
        sock.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any("client left" in r.getMessage() for r in caplog.records):
            time.sleep(0.02)
    messages = [r.getMessage() for r in caplog.records]
    assert any("client left during POST /query" in m for m in messages), messages
    assert not any(r.exc_info for r in caplog.records) and not any("Traceback" in m for m in messages)
    assert client.get("/health").status_code == 200
