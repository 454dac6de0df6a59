"""Every command of README.md and docs/quickstart.md, extracted from their ```bash and ```python blocks, runs
here in doc order, one scratch folder per document, so the walkthroughs cannot rot. README.md's commands are
the non-slow test (about a minute of CPU); docs/quickstart.md repeats most of them and adds a grounding head,
a synthetic set and the Python API, which together take about 1.5 minutes more: that test is SLOW
(`pytest -m slow`). A command the table below does not name runs exactly as written. The named ones run in a
reduced or checked form, each with its reason:

- `bash tools/setup.sh && .venv/bin/tal demo`: set-up is not run again (this suite runs inside the .venv it
  made, and .ci/run runs it on every fresh clone); the demo runs REDUCED, `--videos 16 --epochs-scale 0.2`
  (about 15 s of CPU instead of 2 minutes). The full demo, as written, is the slow test at the end.
- `bash tools/setup.sh && .venv/bin/python -m pytest -q`: NOT RUN here, it is this suite; .ci/run runs it
  (tests/test_docs.py checks that .ci/run holds exactly that command).
- `tal train ...`: REDUCED to `train.epochs=1 eval.interval=1` (the configs' own epochs are the slow tests'
  business, tests/test_configs_*.py).
- `tal serve ...` and `mkdocs serve`: servers; started on a free port, asked once (`/health`, the home page),
  then stopped.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
README = REPO / "README.md"
QUICKSTART = REPO / "docs" / "quickstart.md"
SETUP_DEMO = "bash tools/setup.sh && .venv/bin/tal demo"
SETUP_TESTS = "bash tools/setup.sh && .venv/bin/python -m pytest -q"
REDUCED_DEMO = "tal demo --videos 16 --epochs-scale 0.2 --no-progress"
REDUCED_TRAINING = ["train.epochs=1", "eval.interval=1"]
_BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the servers are on this machine


def doc_commands(doc: Path) -> list[tuple[str, str]]:
    """(language, command) in doc order: bash lines with their continuations joined, python blocks whole;
    a command that comes twice runs once."""
    out, seen = [], set()
    for language, body in _BLOCK.findall(doc.read_text(encoding="utf-8")):
        if language == "python":
            commands = [body]
        else:
            joined = re.sub(r"\\\n\s*", "", body)
            commands = [line.strip() for line in joined.splitlines()
                        if line.strip() and not line.strip().startswith("#")]
        for command in commands:
            if command not in seen:
                seen.add(command)
                out.append((language, command))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def _run(command: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    run = subprocess.run(command, shell=True, executable="/bin/bash", cwd=cwd, env=_env(), capture_output=True,
                         text=True, timeout=timeout)
    assert run.returncode == 0, f"`{command}` exited {run.returncode}:\n{run.stderr[-3000:]}"
    return run


def _serve(command: list[str], cwd: Path, url: str, timeout: float = 120) -> bytes:
    """Start a server, GET `url` once it answers, stop it; the body."""
    server = subprocess.Popen(command, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert server.poll() is None, f"`{' '.join(command)}` exited: {server.stderr.read()[-3000:]}"
            try:
                with _NO_PROXY.open(url, timeout=5) as answer:
                    return answer.read()
            except OSError:
                assert time.monotonic() < deadline, f"`{' '.join(command)}` did not answer {url} in {timeout} s"
                time.sleep(0.3)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _check_tal_serve(command: str, cwd: Path) -> None:
    port = _free_port()
    argv = command.split()
    argv[0] = str(BIN / "tal")
    health = json.loads(_serve([*argv, "--port", str(port)], cwd, f"http://127.0.0.1:{port}/health"))
    assert health["status"] == "ok" and health["num_videos"] > 0


def _check_mkdocs_serve(command: str) -> None:
    port = _free_port()
    argv = [str(BIN / "mkdocs"), *command.split()[1:], "--dev-addr", f"127.0.0.1:{port}"]
    page = _serve(argv, REPO, f"http://127.0.0.1:{port}/", timeout=180).decode()
    assert "<title>" in page and "tal" in page


def test_the_docs_have_the_commands_this_test_expects():
    for doc in (README, QUICKSTART):
        commands = [c for _, c in doc_commands(doc)]
        assert commands[0] == SETUP_DEMO, doc
        assert any(c.startswith("tal train ") for c in commands) and any(c.startswith("tal serve ") for c in commands)
    readme = [c for _, c in doc_commands(README)]
    assert readme[1] == SETUP_TESTS and ".venv/bin/mkdocs serve" in readme


def _run_doc(doc: Path, tmp_path: Path) -> list[str]:
    (tmp_path / "configs").symlink_to(REPO / "configs")
    ran = []
    for language, command in doc_commands(doc):
        if command == SETUP_TESTS:
            continue  # this suite itself (see the module docstring)
        if command == SETUP_DEMO:
            _run(REDUCED_DEMO, tmp_path)
            assert (tmp_path / "tal-demo" / "report.md").is_file()
        elif language == "python":
            run = subprocess.run([sys.executable, "-c", command], cwd=tmp_path, env=_env(), capture_output=True,
                                 text=True, timeout=300)
            assert run.returncode == 0, f"{doc.name}: python block failed:\n{command}\n{run.stderr[-3000:]}"
        elif command.startswith("tal serve "):
            _check_tal_serve(command, tmp_path)
        elif command.startswith(".venv/bin/mkdocs serve"):
            _check_mkdocs_serve(command.removeprefix(".venv/bin/"))
        elif command.startswith("tal train "):
            assert " --set " in command, command
            _run(f"{command} {' '.join(REDUCED_TRAINING)} --no-progress", tmp_path)
        else:
            _run(command, tmp_path)
        ran.append(command)
    # what the walkthroughs promise is there
    assert (tmp_path / "runs" / "mine" / "checkpoint_best.pt").is_file()
    detections = json.loads((tmp_path / "detections.json").read_text())
    assert "syn_0000" in detections["results"]
    assert (tmp_path / "pr.png").is_file() and (tmp_path / "my_feats.h5").is_file()
    return ran


def test_every_command_of_the_readme_runs(tmp_path):
    """Non-slow: the reduced demo, then README.md's other commands in order."""
    assert len(_run_doc(README, tmp_path)) >= 10


@pytest.mark.slow
def test_every_command_of_the_quickstart_runs(tmp_path):
    """Slow (about 2.5 minutes of CPU): docs/quickstart.md's commands in order, the demo reduced."""
    assert len(_run_doc(QUICKSTART, tmp_path)) >= 15
    assert (tmp_path / "runs" / "mine_g" / "metrics.json").is_file() and (tmp_path / "query.png").is_file()


@pytest.mark.slow
def test_the_demo_as_written(tmp_path):
    """`tal demo` unreduced (about 2 minutes on 2 cores), the first command of both documents after set-up."""
    run = _run(SETUP_DEMO.split(" && ")[1].replace(".venv/bin/", "") + " --no-progress", tmp_path, timeout=1800)
    summary = json.loads(run.stdout)
    assert summary["detection"]["mAP@0.5"] > 3 * summary["detection"]["chance"]
    assert summary["grounding"]["R@1,IoU=0.5"] > 3 * summary["grounding"]["chance"]
