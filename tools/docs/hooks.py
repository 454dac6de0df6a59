"""MkDocs hooks of tal's documentation (mkdocs.yml `hooks:`), plain functions so the tests can call them too.

- The command-line reference (docs/cli.md) is rendered from tal's own argparse parsers at build time: the
  marker `<!-- tal:cli-reference -->` becomes every verb's `--help`, so the page cannot drift from the CLI.
- A model page's marker `<!-- tal:docstring tal.models.a2net -->` becomes that module's docstring, read from
  the source file (no import, no torch), so the per-head pages say what the code says.
- Bullet lists that follow a paragraph line without a blank line (the habit of tal's docstrings and pages)
  render as lists: Python-Markdown needs the blank line, so it is inserted (outside code blocks).
- Pages that arrive from other branches (`OPTIONAL_PAGES`) sit in the navigation where they belong and are
  left out of it while their file is not there yet.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HELP_COLUMNS = 80  # the width `--help` is rendered at, here and in the test that compares them
CLI_MARKER = "<!-- tal:cli-reference -->"
DOCSTRING_MARKER = re.compile(r"<!-- tal:docstring ([\w.]+) -->")
OPTIONAL_PAGES = ("features.md", "performance.md", "inference.md")
_BULLET = re.compile(r"^\s*- ")
_FENCE = re.compile(r"^\s*(```|~~~)")


# ------------------------------------------------------------------------------------------------
# the command-line reference


def verb_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """(command, parser) for `tal` and every verb and sub-verb, in the order `tal --help` lists them."""
    from tal.cli.main import build_parser

    out: list[tuple[str, argparse.ArgumentParser]] = []

    def walk(command: str, parser: argparse.ArgumentParser) -> None:
        out.append((command, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                seen = set()
                for name, sub in action.choices.items():
                    if id(sub) not in seen:
                        seen.add(id(sub))
                        walk(f"{command} {name}", sub)

    walk("tal", build_parser())
    return out


def help_text(parser: argparse.ArgumentParser) -> str:
    """`parser.format_help()` at HELP_COLUMNS columns, what `COLUMNS=80 tal ... --help` prints."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_COLUMNS)
    try:
        return parser.format_help()
    finally:
        if before is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = before


def cli_reference_markdown() -> str:
    """The body of docs/cli.md: one section per command, its `--help` verbatim."""
    parts = []
    for command, parser in verb_parsers():
        parts.append(f"## `{command}`\n\n```text\n{help_text(parser).rstrip()}\n```\n")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------
# module docstrings and lists


def module_docstring(module: str) -> str:
    """The docstring of a tal module, read from its source file."""
    path = REPO / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    if not doc:
        raise ValueError(f"{module} has no module docstring")
    return doc


def space_lists(markdown: str) -> str:
    """Insert a blank line before a bullet list that directly follows a paragraph line (outside fences)."""
    lines = markdown.split("\n")
    out: list[str] = []
    in_fence = False
    for line in lines:
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and _BULLET.match(line) and out:
            prev = out[-1]
            if prev.strip() and not _BULLET.match(prev) and not prev.startswith((" ", "\t", "|", "#", ">")):
                out.append("")
        out.append(line)
    return "\n".join(out)


def expand(markdown: str) -> str:
    """A page's Markdown with tal's markers replaced and its lists spaced."""
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference_markdown())
    markdown = DOCSTRING_MARKER.sub(lambda m: module_docstring(m.group(1)), markdown)
    return space_lists(markdown)


# ------------------------------------------------------------------------------------------------
# mkdocs events


def _drop_missing(nav: list, docs_dir: Path) -> list:
    kept = []
    for item in nav:
        if isinstance(item, dict):
            (title, value), = item.items()
            if isinstance(value, list):
                kept.append({title: _drop_missing(value, docs_dir)})
            elif value in OPTIONAL_PAGES and not (docs_dir / value).is_file():
                continue
            else:
                kept.append(item)
        else:
            kept.append(item)
    return kept


def _list_spacing_extension():
    """A Markdown extension running `space_lists` first, so the docstrings that mkdocstrings renders (with the
    site's extensions) get their lists too, not only the pages."""
    from markdown import Extension
    from markdown.preprocessors import Preprocessor

    class SpaceLists(Preprocessor):
        def run(self, lines: list[str]) -> list[str]:
            return space_lists("\n".join(lines)).split("\n")

    class SpaceListsExtension(Extension):
        def extendMarkdown(self, md) -> None:  # noqa: N802 - Python-Markdown's name
            md.preprocessors.register(SpaceLists(md), "tal_space_lists", 100)

    return SpaceListsExtension()


def _early(function):
    """Run before the plugins' own on_config (mkdocstrings copies the Markdown extensions there)."""
    try:
        from mkdocs.plugins import event_priority
    except ImportError:  # the tests import this file without needing mkdocs
        return function
    return event_priority(100)(function)


@_early
def on_config(config, **kwargs):
    config["nav"] = _drop_missing(config["nav"], Path(config["docs_dir"]))
    config["markdown_extensions"].append(_list_spacing_extension())
    return config


def on_page_markdown(markdown, page, config, files, **kwargs):
    return expand(markdown)
