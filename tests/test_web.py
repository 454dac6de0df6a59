"""tal's web page in headless Chromium against small trained demo checkpoints (2D-TAN and A2Net on rendered
mp4 videos), and the HTTP routes behind it with the real models: video files with range requests, uploads,
warnings. Screenshots of each state go to $TAL_TEST_ARTIFACTS (default test-artifacts/web).

TAL_WEB_DEMO="VIDEOS,EPOCHS_SCALE" trains the checkpoints longer (default "12,0.25", about 20 s; the
screenshots of docs/web.md were taken with "24,1", the reduced demo of tests/test_demo.py)."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

httpx = pytest.importorskip("httpx")

from tal.demo import DemoSettings, run_demo  # noqa: E402
from tal.serve import BackgroundServer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("TAL_TEST_ARTIFACTS", REPO / "test-artifacts" / "web"))
CHROMIUM = Path(os.environ.get("TAL_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
UNKNOWN_WORDS = "zebras juggle xylophones"
WAIT_MS = 20_000


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Two small trained checkpoints (12 rendered videos, a quarter of the demo's epochs), trained once."""
    out = tmp_path_factory.mktemp("web_demo")
    videos, epochs_scale = os.environ.get("TAL_WEB_DEMO", "12,0.25").split(",")
    run_demo(DemoSettings(out=out, num_videos=int(videos), epochs_scale=float(epochs_scale), progress=False))
    return out


@pytest.fixture(scope="module")
def validation_queries(demo) -> list[dict]:
    stamp = json.loads((demo / "videos" / "demo_set.json").read_text())
    return [json.loads(line) for line in Path(stamp["grounding"]["validation"]).read_text().splitlines()]


@pytest.fixture(scope="module")
def grounding_server(demo, tmp_path_factory):
    from tal.api import MomentRetriever
    from tal.web.uploads import UploadLimits
    from tal.web.videos import VideoFiles

    retriever = MomentRetriever.from_checkpoint(demo / "grounding" / "checkpoint_best.pt",
                                                features=demo / "features.h5")
    files = VideoFiles.from_folder(demo / "videos", retriever.videos())
    assert len(files) == len(retriever.videos())
    folder = tmp_path_factory.mktemp("uploads")
    with BackgroundServer(retriever, video_files=files, uploads_folder=folder,
                          upload_limits=UploadLimits(max_bytes=2 * 2**20, max_duration_s=25.0)) as server:
        server.retriever, server.uploads_folder = retriever, folder
        yield server


@pytest.fixture(scope="module")
def detection_server(demo):
    from tal.api import ActionDetector
    from tal.web.videos import VideoFiles

    detector = ActionDetector.from_checkpoint(demo / "detection" / "checkpoint_best.pt", features=demo / "features.h5")
    with BackgroundServer(detector, video_files=VideoFiles.from_folder(demo / "videos", detector.videos())) as server:
        server.detector = detector
        yield server


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium driven by playwright (tools/setup.sh installs both)."""
    if not CHROMIUM.is_file():
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM}: run 'bash tools/setup.sh' as root (it runs "
                    "apt-get install chromium), or point TAL_CHROMIUM at a Chromium binary")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need playwright: pip install -e '.[test]' (tools/setup.sh does)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []  # script errors, and failed loads other than the API refusals a test asks for
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and not msg.text.startswith(
        "Failed to load resource") else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 and urlsplit(
        r.url).path not in ("/query", "/detect", "/uploads") else None)
    yield page
    context.close()
    assert not errors, f"the page logged errors: {errors}"


def shot(page, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{path} is nearly empty"
    return path


def open_video(page, server, video: str) -> None:
    page.goto(server.url + "/")
    page.get_by_role("button", name=video, exact=True).click()
    page.wait_for_function("document.getElementById('video-title').textContent === %s" % json.dumps(video))
    # Chromium decodes the file (H.264 from PyAV's libx264): the first frame is on screen
    page.wait_for_function("!document.getElementById('no-file').hidden || document.getElementById('player').readyState >= 2")


def player_time(page) -> float:
    return float(page.evaluate("document.getElementById('player').currentTime"))


# --- the page --------------------------------------------------------------------------------------------------

def test_sentence_search_draws_moments_and_a_click_plays_one(page, grounding_server, validation_queries):
    query = validation_queries[0]
    asked: list[tuple[str, str]] = []
    page.on("request", lambda request: asked.append((urlsplit(request.url).netloc, urlsplit(request.url).path)))
    open_video(page, grounding_server, query["video"])
    page.wait_for_function("document.getElementById('player').readyState >= 1")  # the file's metadata loaded
    page.fill("#sentence", query["query"])
    page.fill("#top-k", "4")
    page.press("#sentence", "Enter")
    page.wait_for_selector("#results li >> nth=3")
    expected = grounding_server.retriever.query(query["video"], query["query"], top_k=4)
    rows = page.locator("#results li").all_inner_texts()
    assert len(rows) == 4 and page.locator("#timeline .bar").count() == 4
    for row, moment in zip(rows, expected):  # JavaScript rounds ties up (10.25 -> 10.3), Python to even
        start, end, score = page.evaluate("(m) => [m.start.toFixed(1), m.end.toFixed(1), m.score.toFixed(3)]", moment)
        assert f"{start} s to {end} s" in row and f"score {score}" in row
    shot(page, "grounding_moments")

    second = expected[1]
    page.locator("#timeline .bar").nth(1).click()
    page.wait_for_function(f"Math.abs(document.getElementById('player').currentTime - {second['start']}) < 1.5 "
                           f"&& !document.getElementById('player').seeking")
    assert second["start"] - 0.05 <= player_time(page) <= second["start"] + 1.5
    assert "selected" in page.locator("#results button").nth(1).get_attribute("class")
    page.evaluate("document.getElementById('player').pause()")
    shot(page, "grounding_playing")
    video = query["video"]
    api = {"/", "/health", "/videos", f"/videos/{video}", f"/videos/{video}/file", "/query"}
    assert {host for host, _ in asked} == {urlsplit(grounding_server.url).netloc}  # nothing from other hosts
    assert {path for _, path in asked if not path.startswith("/static/")} == api  # the JSON API and the file


def test_a_bad_sentence_shows_the_api_message(page, grounding_server, validation_queries):
    video = validation_queries[0]["video"]
    api = httpx.post(grounding_server.url + "/query", json={"video": video, "query": "?! ...", "top_k": 5})
    assert api.status_code == 422
    open_video(page, grounding_server, video)
    page.fill("#sentence", "?! ...")
    page.press("#sentence", "Enter")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error") == api.json()["error"]
    assert page.locator("#results li").count() == 0
    shot(page, "grounding_bad_sentence")


def test_unknown_words_answer_with_a_warning(page, grounding_server, validation_queries):
    video = validation_queries[0]["video"]
    answer = httpx.post(grounding_server.url + "/query", json={"video": video, "query": UNKNOWN_WORDS}).json()
    assert len(answer["moments"]) == 5
    assert answer["warnings"] == grounding_server.retriever.query(video, UNKNOWN_WORDS).warnings
    assert len(answer["warnings"]) == 1 and "zebras, juggle, xylophones" in answer["warnings"][0]
    known = validation_queries[0]["query"]
    assert "warnings" not in httpx.post(grounding_server.url + "/query", json={"video": video, "query": known}).json()
    open_video(page, grounding_server, video)
    page.fill("#sentence", UNKNOWN_WORDS)
    page.press("#sentence", "Enter")
    page.wait_for_selector("#warning:not([hidden])")
    assert page.inner_text("#warning") == answer["warnings"][0]
    shot(page, "grounding_warning")


def test_keyboard_only_search(page, grounding_server, validation_queries):
    query = validation_queries[1]
    page.goto(grounding_server.url + "/")
    page.wait_for_selector("#video-list button")
    page.keyboard.press("Tab")  # the header's link
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "video-search"
    page.keyboard.type(query["video"])
    assert page.locator("#video-list button").count() == 1
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")  # selects the video and moves the focus to the sentence box
    page.wait_for_function("document.activeElement.id === 'sentence'")
    page.keyboard.type(query["query"])
    page.keyboard.press("Enter")
    page.wait_for_selector("#results li >> nth=4")
    page.keyboard.press("Shift+Tab")
    for _ in range(20):  # Tab on to the first ranked moment's button, then press it
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.closest('#results') !== null"):
            break
    page.keyboard.press("Enter")
    first = grounding_server.retriever.query(query["video"], query["query"], top_k=5)[0]
    page.wait_for_function(f"Math.abs(document.getElementById('player').currentTime - {first['start']}) < 1.5")


def test_narrow_window_has_no_sideways_scroll(browser, grounding_server, validation_queries):
    context = browser.new_context(viewport={"width": 380, "height": 800})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    query = validation_queries[0]
    open_video(page, grounding_server, query["video"])
    page.fill("#sentence", query["query"])
    page.press("#sentence", "Enter")
    page.wait_for_selector("#results li >> nth=4")
    assert page.evaluate("document.documentElement.scrollWidth") <= 380
    library, viewer = page.locator("#library").bounding_box(), page.locator("#viewer").bounding_box()
    assert viewer["y"] >= library["y"] + library["height"] - 1  # one column: the list above the player
    shot(page, "grounding_narrow")
    context.close()


def test_detection_page_shows_actions_per_class_with_a_threshold(page, detection_server):
    detector = detection_server.detector
    video = detector.videos()[-1]
    open_video(page, detection_server, video)
    page.wait_for_selector("#detect-controls:not([hidden])")
    assert page.locator("#query-form").is_hidden()
    page.focus("#threshold")
    page.keyboard.press("Home")  # threshold 0: every detection
    everything = detector.detect(video, 0.0, 1000)
    assert everything, "the small A2Net detected nothing"
    page.wait_for_function(f"document.querySelectorAll('#timeline .bar').length === {len(everything)}")
    lanes = [name for name in page.locator("#lanes .lane-name").all_inner_texts() if name]  # a class's first row
    assert lanes == sorted({d["label"] for d in everything}, key=detector.classes.index)
    for _ in range(5):
        page.keyboard.press("ArrowRight")  # 0.05
    assert page.inner_text("#threshold-value") == "0.05"
    kept = detector.detect(video, 0.05, 1000)
    page.wait_for_function(f"document.querySelectorAll('#timeline .bar').length === {len(kept)}")
    shot(page, "detection_timeline")
    best = kept[0] if kept else everything[0]
    page.locator("#results button").first.click()
    page.wait_for_function(f"Math.abs(document.getElementById('player').currentTime - {best['start']}) < 1.5")


def test_upload_from_the_page_then_search_it(page, grounding_server, tmp_path):
    from tal.datasets.synthetic_render import render_video

    clip = tmp_path / "my clip.mp4"
    render_video(clip, [("bounce", 2.0, 7.0), ("spin", 10.0, 15.0)], 18.0, seed=7)
    page.goto(grounding_server.url + "/")
    page.wait_for_selector("#upload-form:not([hidden])")
    assert "2 MB and 25 s" in page.inner_text("#upload-limits")
    page.set_input_files("#upload-file", str(clip))
    page.click("#upload-form button")
    page.wait_for_function("document.getElementById('upload-status').textContent.startsWith('Extracting')"
                           " || document.getElementById('upload-status').textContent.endsWith('is ready.')")
    shot(page, "upload_progress")
    page.wait_for_function("document.getElementById('upload-status').textContent === 'my_clip is ready.'",
                           timeout=120_000)
    page.wait_for_function("document.getElementById('video-title').textContent === 'my_clip'")  # selected next
    assert "my_clip" in httpx.get(grounding_server.url + "/videos").json()["videos"]
    page.fill("#sentence", "a ball bounces")
    page.press("#sentence", "Enter")
    page.wait_for_selector("#results li >> nth=4")
    info = httpx.get(grounding_server.url + "/videos/my_clip").json()
    assert info["file"] is True and abs(info["duration"] - 18.0) < 0.2
    shot(page, "upload_searchable")
    from tal.features.cache import open_feature_cache
    from tal.web.uploads import expected_clips

    stored = grounding_server.uploads_folder / "my_clip.mp4"
    assert stored.read_bytes() == clip.read_bytes()
    cache = open_feature_cache(grounding_server.uploads_folder / "my_clip.h5")
    assert expected_clips(stored, grounding_server.retriever.extract_settings()) == len(cache.features("my_clip"))
    restarted_with_the_upload_folder(grounding_server)


def restarted_with_the_upload_folder(server) -> None:
    """A new server on the same --uploads folder answers for the earlier upload, as the first one does."""
    from fastapi.testclient import TestClient

    from tal.api import MomentRetriever
    from tal.serve import create_app

    first = server.retriever
    again = MomentRetriever.from_checkpoint(first.checkpoint, features=first.features.path)
    with TestClient(create_app(again, uploads_folder=server.uploads_folder)) as client:
        assert client.get("/videos").json()["videos"][-1] == "my_clip"
        assert client.get("/videos/my_clip").json()["file"] is True
        body = {"video": "my_clip", "query": "a ball spins", "top_k": 3}
        assert client.post("/query", json=body).json() == httpx.post(server.url + "/query", json=body).json()


def test_docs_page_lists_every_operation_offline(page, grounding_server):
    """/docs is drawn by tal's own script from /openapi.json: no request leaves the server."""
    hosts = set()
    page.on("request", lambda request: hosts.add(urlsplit(request.url).netloc))
    page.goto(grounding_server.url + "/docs")
    spec = httpx.get(grounding_server.url + "/openapi.json").json()
    operations = [(method.upper(), path) for path, methods in spec["paths"].items() for method in methods]
    assert ("POST", "/uploads") in operations and ("POST", "/query") in operations
    page.wait_for_selector(f".endpoint >> nth={len(operations) - 1}")
    titles = page.locator(".endpoint h2").all_inner_texts()
    assert [tuple(title.split(maxsplit=1)) for title in titles] == operations
    query = page.locator(".endpoint").nth(operations.index(("POST", "/query"))).inner_text()
    assert "at most 512 characters" in query and ">= 1, <= 100, default 5" in query
    assert hosts == {urlsplit(grounding_server.url).netloc}
    shot(page, "docs")


def test_a_bad_upload_shows_the_servers_reason_on_the_page(page, grounding_server, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00not a video" * 100)
    page.goto(grounding_server.url + "/")
    page.wait_for_selector("#upload-form:not([hidden])")
    page.set_input_files("#upload-file", str(broken))
    page.click("#upload-form button")
    page.wait_for_function("document.getElementById('upload-status').textContent.startsWith('the uploaded file')")
    assert page.inner_text("#upload-status").startswith("the uploaded file is not a video tal can read (")
    assert page.locator("#upload-progress").is_hidden()
    shot(page, "upload_refused")
    assert httpx.get(grounding_server.url + "/health").json()["status"] == "ok"


# --- the routes behind it, with the real models ----------------------------------------------------------------

def test_range_request_seeks_into_the_middle_of_a_video(grounding_server, demo, validation_queries):
    video = validation_queries[0]["video"]
    data = next((demo / "videos").rglob(f"{video}.mp4")).read_bytes()
    url = f"{grounding_server.url}/videos/{video}/file"
    whole = httpx.get(url)
    assert whole.status_code == 200 and whole.content == data and whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes"
    middle = len(data) // 2
    part = httpx.get(url, headers={"Range": f"bytes={middle}-{middle + 999}"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes {middle}-{middle + 999}/{len(data)}"
    assert part.content == data[middle:middle + 1000]
    tail = httpx.get(url, headers={"Range": f"bytes={middle}-"})
    assert tail.status_code == 206 and tail.content == data[middle:]
    beyond = httpx.get(url, headers={"Range": f"bytes={len(data) + 10}-"})
    assert beyond.status_code == 416


def test_path_traversal_ids_are_refused(grounding_server):
    for raw in ("/videos/..%2F..%2F..%2Fetc%2Fpasswd/file", "/videos/../../../etc/passwd/file",
                "/videos/%2Fetc%2Fpasswd/file"):
        with socket.create_connection((grounding_server.host, grounding_server.port), timeout=10) as sock:
            sock.sendall(f"GET {raw} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.split()[1] == b"404", (raw, head)
        assert b"root:" not in body and "error" in json.loads(body), raw


def test_uploads_refuse_bad_files_and_the_server_keeps_going(grounding_server, tmp_path):
    from tal.datasets.synthetic_render import render_video

    url = grounding_server.url
    bad = httpx.post(f"{url}/uploads", params={"name": "broken.mp4"}, content=b"\x00not a video" * 100)
    assert bad.status_code == 422 and bad.json()["error"].startswith("the uploaded file is not a video tal can read")
    named = httpx.post(f"{url}/uploads", params={"name": "notes.txt"}, content=b"hello")
    assert named.status_code == 422 and "is not named like a video file" in named.json()["error"]
    big = httpx.post(f"{url}/uploads", params={"name": "big.mp4"}, content=b"0" * (2 * 2**20 + 1))
    assert big.status_code == 413 and "the limit is 2 MB" in big.json()["error"]
    long_clip = tmp_path / "long.mp4"
    render_video(long_clip, [("spin", 1.0, 4.0)], 30.0, seed=3)
    too_long = httpx.post(f"{url}/uploads", params={"name": "long.mp4"}, content=long_clip.read_bytes())
    assert too_long.status_code == 422 and too_long.json()["error"] == (
        "the uploaded video lasts 30 s; the limit is 25 s")
    assert httpx.post(f"{url}/uploads", content=b"x").json() == {"error": "name: Field required"}
    assert httpx.get(f"{url}/uploads/broken").status_code == 404
    left = [p.name for p in grounding_server.uploads_folder.iterdir() if p.stem.split(".")[0] in ("broken", "long",
                                                                                                    "big")]
    assert left == [], "refused uploads leave no file behind"
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["uploads"] == {"max_bytes": 2 * 2**20, "max_duration_s": 25.0}


def test_detect_endpoint_answers_as_the_detector(detection_server):
    detector = detection_server.detector
    video = detector.videos()[0]
    reply = httpx.post(detection_server.url + "/detect", json={"video": video, "score_threshold": 0.05, "top_k": 7})
    assert reply.status_code == 200
    assert reply.json() == {"detections": detector.detect(video, 0.05, 7)}
    health = httpx.get(detection_server.url + "/health").json()
    assert health["task"] == "detection" and health["classes"] == detector.classes
    wrong = httpx.post(detection_server.url + "/query", json={"video": video, "query": "a ball"})
    assert wrong.status_code == 404 and "POST /detect" in wrong.json()["error"]
    assert httpx.get(f"{detection_server.url}/videos/{video}").json() == {
        "video": video, "duration": detector.duration_of(video), "file": True}


def test_tal_serve_cli_with_a_detection_checkpoint_and_videos(demo, tmp_path):
    """`tal serve` in a subprocess: the checkpoint's task picks /detect; --videos (a mapping file here) plays."""
    import signal
    import subprocess
    import sys

    mapping = tmp_path / "map.json"
    video = "syn_0003"
    relative = next((demo / "videos").rglob(f"{video}.mp4")).relative_to(demo / "videos")
    mapping.write_text(json.dumps({video: str(relative)}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tal", "serve", "--checkpoint", str(demo / "detection" / "checkpoint_best.pt"),
         "--features", str(demo / "features.h5"), "--videos", str(demo / "videos"), "--video-map", str(mapping),
         "--port", "0", "--device", "cpu", "--threads", "1", "--log-level", "warning"],
        stderr=subprocess.PIPE, text=True, cwd=REPO, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = []
        while not lines or "listening on" not in lines[-1]:
            line = proc.stderr.readline()
            assert line, f"tal serve exited with {proc.wait()}: {''.join(lines)}"
            lines.append(line)
        assert f"{len(detector_ids(demo))} videos; 1 video file; listening on" in lines[-1]
        url = lines[-1].split("listening on ")[1].split()[0]
        assert httpx.get(url + "/health").json()["task"] == "detection"
        assert httpx.get(f"{url}/videos/{video}/file").content == (demo / "videos" / relative).read_bytes()
        assert httpx.get(f"{url}/videos/syn_0004").json()["file"] is False
        assert httpx.post(url + "/detect", json={"video": video, "top_k": 3}).status_code == 200
        assert "<title>tal</title>" in httpx.get(url + "/").text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def detector_ids(demo: Path) -> list[str]:
    from tal.features.cache import open_feature_cache

    return list(open_feature_cache(demo / "features.h5").videos)
