"""The documentation stays inside the repository and in step with the code: every Markdown link of README.md
and docs/ resolves to a file (and heading) of the repository or is a public URL, every page is in the
navigation, the command-line reference equals each verb's `--help`, and every refused input of
tests/test_reliability.py is listed on the reliability page. (`mkdocs build --strict` itself runs in .ci/run.)"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
TAL = Path(sys.executable).with_name("tal")


def _hooks():
    spec = importlib.util.spec_from_file_location("tal_docs_hooks", REPO / "tools" / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HOOKS = _hooks()
PAGES = sorted(DOCS.rglob("*.md"))
MARKDOWN = [REPO / "README.md", *PAGES]
_FENCE = re.compile(r"^\s*(```|~~~).*?^\s*\1", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_AUTOLINK = re.compile(r"<(https?://[^>\s]+)>")
_IMG = re.compile(r"<img\s[^>]*src=\"([^\"]+)\"")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """The Markdown without code blocks and code spans, where links are not links."""
    return _CODE.sub("", _FENCE.sub("", text))


def _links(path: Path) -> list[str]:
    text = _prose(HOOKS.expand(path.read_text(encoding="utf-8")))
    return _LINK.findall(text) + _AUTOLINK.findall(text) + _IMG.findall(text)


def _slug(title: str) -> str:
    """The anchor Python-Markdown's toc (and GitHub) gives a heading: lowercase, punctuation dropped."""
    title = re.sub(r"`([^`]*)`", r"\1", title)
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)
    title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    title = re.sub(r"[^\w\s-]", "", title).strip().lower()
    return re.sub(r"[-\s]+", "-", title)


def _anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", HOOKS.expand(path.read_text(encoding="utf-8")))
    return {_slug(m.group(2)) for m in _HEADING.finditer(text)}


def test_the_pages_are_found():
    assert len(PAGES) >= 30 and (DOCS / "index.md") in PAGES


@pytest.mark.parametrize("path", MARKDOWN, ids=[str(p.relative_to(REPO)) for p in MARKDOWN])
def test_markdown_links_resolve_inside_the_repository(path):
    problems = []
    for target in _links(path):
        url = urlparse(target)
        if url.scheme in ("http", "https"):
            host = url.hostname or ""
            if host in ("localhost", "127.0.0.1", "0.0.0.0") or host.startswith(("10.", "192.168.")) or not "." in host:
                problems.append(f"{target}: not a public URL")
            continue
        if url.scheme or target.startswith("//"):
            problems.append(f"{target}: only relative links and public http(s) URLs")
            continue
        file_part = unquote(url.path)
        dest = (path.parent / file_part).resolve() if file_part else path
        if REPO not in dest.parents and dest != REPO:
            problems.append(f"{target}: points outside the repository")
            continue
        if not dest.exists():
            problems.append(f"{target}: no such file")
            continue
        if url.fragment and dest.suffix == ".md" and url.fragment not in _anchors(dest):
            problems.append(f"{target}: no heading #{url.fragment} in {dest.relative_to(REPO)}")
    assert not problems, f"{path.relative_to(REPO)}:\n" + "\n".join(problems)


def test_no_page_points_outside_the_repository_in_text_either():
    for path in MARKDOWN:
        text = path.read_text(encoding="utf-8")
        assert "../shared" not in text and "DESIGN.md" not in text, path


def _nav_files(nav) -> list[str]:
    out = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out.extend(_nav_files(value) if isinstance(value, list) else [value])
    return out


def test_every_page_is_in_the_navigation():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    nav = HOOKS._drop_missing(config["nav"], DOCS)
    listed = _nav_files(nav)
    pages = {p.relative_to(DOCS).as_posix() for p in PAGES}
    assert len(listed) == len(set(listed)), "a page is listed twice"
    assert sorted(pages - set(listed)) == [], "pages missing from the nav in mkdocs.yml"
    assert sorted(set(listed) - pages) == [], "nav entries without a page"


def test_optional_pages_leave_the_navigation_while_they_are_missing(tmp_path):
    nav = [{"Home": "index.md"}, {"Guide": [{"Backbones": "features.md"}, {"Formats": "formats.md"}]}]
    assert HOOKS._drop_missing(nav, tmp_path) == [{"Home": "index.md"}, {"Guide": [{"Formats": "formats.md"}]}]
    (tmp_path / "features.md").write_text("# x\n")
    assert HOOKS._drop_missing(nav, tmp_path) == nav


def test_lists_after_a_paragraph_line_get_their_blank_line():
    text = "Three parts:\n- one\n- two\n  more\n\n```\nx:\n- not a list\n```\n| a |\n- b\n"
    assert HOOKS.space_lists(text) == "Three parts:\n\n- one\n- two\n  more\n\n```\nx:\n- not a list\n```\n| a |\n- b\n"


def test_model_pages_render_their_module_docstring():
    for page in sorted((DOCS / "models").glob("*.md")):
        markers = HOOKS.DOCSTRING_MARKER.findall(page.read_text())
        if page.name == "index.md":
            continue
        assert len(markers) == 1, page
        (module,) = markers
        assert (REPO / Path(*module.split("."))).with_suffix(".py").is_file()
        assert HOOKS.module_docstring(module).splitlines()[0] in HOOKS.expand(page.read_text())


def _help(command: str) -> str:
    env = {**os.environ, "COLUMNS": str(HOOKS.HELP_COLUMNS)}
    run = subprocess.run([str(TAL), *command.split()[1:], "--help"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_the_cli_reference_is_every_verbs_help_verbatim():
    """docs/cli.md is rendered from the parsers at build time; here each section is compared with what the
    installed `tal` prints, so the page equals `--help` for every verb and sub-verb."""
    reference = HOOKS.cli_reference_markdown()
    sections = dict(re.findall(r"^## `([^`]+)`\n\n```text\n(.*?)\n```", reference, re.S | re.M))
    commands = [command for command, _ in HOOKS.verb_parsers()]
    assert list(sections) == commands
    top = _help("tal")
    verbs = re.findall(r"^    ([a-z][a-z-]+)", top, re.M)  # the COMMAND list of `tal --help`
    assert {c.split()[1] for c in commands if c.count(" ") == 1} == set(verbs)
    for command in ("tal evaluate detection", "tal visualize timeline", "tal features info"):
        assert command in commands
    mismatched = [c for c in commands if sections[c].rstrip() != _help(c).rstrip()]
    assert not mismatched, f"docs/cli.md differs from --help for {mismatched}"
    assert HOOKS.CLI_MARKER in (DOCS / "cli.md").read_text()


def test_every_refused_input_of_the_reliability_catalogue_is_on_the_reliability_page():
    import ast

    tree = ast.parse((REPO / "tests" / "test_reliability.py").read_text())
    cases = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                 and getattr(node.targets[0], "id", None) == "CASES")
    ids = [elt.elts[0].value for elt in cases.elts]
    fragments = {elt.elts[0].value: elt.elts[3] for elt in cases.elts}
    page = (DOCS / "reliability.md").read_text()
    assert len(ids) >= 20
    assert [i for i in ids if f"`{i}`" not in page] == []
    for case, node in fragments.items():
        if isinstance(node, ast.Constant):  # the message fragment, quoted on the page
            assert node.value in page, case


def test_the_readme_starts_with_the_two_commands_and_ci_runs_the_second():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    assert blocks[:2] == ["bash tools/setup.sh && .venv/bin/tal demo",
                          "bash tools/setup.sh && .venv/bin/python -m pytest -q"]
    assert readme.index(blocks[1]) < readme.index("\n## ")
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash tools/setup.sh && .venv/bin/python -m pytest -q" in ci and "mkdocs build --strict" in ci
    assert "set -euo pipefail" in ci
    assert len(readme.splitlines()) <= 200


def _blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(encoding="utf-8"), re.S | re.M)


def test_the_examples_of_the_file_formats_page_are_read_by_tal(tmp_path):
    """docs/formats.md's h5py example is a clean cache, and its annotation and prediction examples score."""
    import json

    page = DOCS / "formats.md"
    (python,) = _blocks(page, "python")
    subprocess.run([sys.executable, "-c", python], cwd=tmp_path, check=True, timeout=120)
    info = subprocess.run([str(TAL), "features", "info", "feats.h5"], cwd=tmp_path, capture_output=True, text=True)
    assert info.returncode == 0 and "problems        none" in info.stdout, info.stdout
    detection_gt, grounding_gt, detection_pred, grounding_pred = _blocks(page, "json")
    (tmp_path / "gt.json").write_text(detection_gt)
    (tmp_path / "pred.json").write_text(detection_pred)
    (tmp_path / "queries.jsonl").write_text(grounding_gt)
    (tmp_path / "pred.jsonl").write_text(grounding_pred)
    run = subprocess.run([str(TAL), "evaluate", "detection", "--gt", "gt.json", "--pred", "pred.json", "--subset",
                          "validation", "--tiou", "0.5"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["mAP"]["0.50"] == 1.0  # the one "jump" of validation found first
    run = subprocess.run([str(TAL), "evaluate", "grounding", "--pred", "pred.jsonl"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["R@1,IoU=0.5"] == 1.0
    for line in grounding_gt.splitlines():
        assert set(json.loads(line)) == {"video", "duration", "query", "segment"}
