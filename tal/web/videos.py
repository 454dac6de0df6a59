"""Which video file plays which cached id: files under one folder, matched by stem or by a mapping file.

The server looks a file up by id in this table only; nothing a request says becomes a path. Every file
is resolved (symbolic links followed) once, when the table is built, and refused if it is not under the
folder.
"""
from __future__ import annotations

import json
import mimetypes
from pathlib import Path

from tal.errors import TalInputError

MEDIA_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska",
               ".mov": "video/quicktime", ".ogv": "video/ogg"}


class VideoFiles:
    """id -> a video file under one of `roots` (the --videos folder, the upload folder)."""

    def __init__(self, root: Path | None = None, files: dict[str, Path] | None = None):
        self.roots: list[Path] = []
        self.files: dict[str, Path] = {}
        if root is not None:
            self.add_root(root)
        for video, path in (files or {}).items():
            self.add(video, path)

    def add_root(self, root: str | Path) -> None:
        self.roots.append(Path(root).resolve())

    @classmethod
    def from_folder(cls, root: str | Path, ids: list[str], mapping: str | Path | None = None) -> "VideoFiles":
        """Files of `root` whose stem is a cached id, or the {id: path} of the JSON `mapping` (paths relative
        to `root`). Ids with no file are left out (the page then shows their timeline only)."""
        root = Path(root)
        if not root.is_dir():
            raise TalInputError(f"--videos {root}: no such folder")
        if mapping is not None:
            return cls(root, _read_mapping(Path(mapping), root))
        from tal.features.extract import VIDEO_SUFFIXES  # (torch: not imported by a server with no video folder)

        wanted = set(ids)
        found: dict[str, Path] = {}
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in VIDEO_SUFFIXES and path.stem in wanted and path.stem not in found:
                found[path.stem] = path
        return cls(root, found)

    def add(self, video: str, path: str | Path) -> None:
        """Play `path` for `video`; a file outside the roots (after following links) is refused."""
        resolved = Path(path).resolve()
        if not any(resolved.is_relative_to(root) for root in self.roots):
            raise TalInputError(f"{path}: the video file of {video!r} is not under "
                                f"{' or '.join(map(str, self.roots)) or 'a video folder'}")
        if not resolved.is_file():
            raise TalInputError(f"{path}: the video file of {video!r} does not exist")
        self.files[video] = resolved

    def get(self, video: str) -> Path | None:
        return self.files.get(video)

    def __contains__(self, video: str) -> bool:
        return video in self.files

    def __len__(self) -> int:
        return len(self.files)


def media_type(path: Path) -> str:
    return MEDIA_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _read_mapping(mapping: Path, root: Path) -> dict[str, Path]:
    try:
        table = json.loads(mapping.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TalInputError(f"--video-map {mapping}: not a readable JSON file ({exc})") from None
    if not isinstance(table, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in table.items()):
        raise TalInputError(f'--video-map {mapping}: expected a JSON object {{"video id": "path under '
                            f'{root}", ...}}')
    return {video: root / path for video, path in table.items()}
