"""Published word-vector files (GloVe) read as published, then cached in a binary form and memory-mapped.

The source is a text file with one word and its `dim` numbers a line (`glove.6B.300d.txt`), or a zip
holding such files (`glove.6B.zip`: the member ending in `.{dim}d.txt` is used). The first read parses
it once and writes, beside the source (or under `~/.cache/tal/word-vectors` when that folder is not
writable), a folder `<name>.tal-cache/` with `vectors.f32` (raw float32 [G, dim]), `words.txt` (one
word a line) and `source.json` (the source's size and mtime, which make the cache stale when they
change). Later reads map `vectors.f32` into memory, so opening the 400k x 300 GloVe table costs only
its word list; rows are read from disk when a sentence uses them.

Parsing rules (those of torchtext, which 2D-TAN uses to read glove.6B.300d): a word2vec header line
("count dim") and blank lines are skipped; the first line fixes the dimension, which must be `dim`;
the word is everything before the last `dim` fields (GloVe 840B has words with spaces); a word listed
twice keeps its first vector.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterable, Iterator

import numpy as np

from tal.errors import TalInputError

GLOVE_HINT = ("GloVe is published on the Stanford NLP GloVe page (nlp.stanford.edu/projects/glove) as "
              "glove.6B.zip, which holds glove.6B.300d.txt; set model.text.word_vectors to that file or the zip, "
              "or model.text.word_vectors=learned to train word embeddings without GloVe")
CACHE_VERSION = 1
CHUNK_LINES = 4096  # lines parsed at once: bounds the first read's memory (about 50 MB at 300-d)


class WordVectors:
    """A word-vector table: `words` [G], `vectors` [G, dim] float32 (memory-mapped), `index` word -> row."""

    def __init__(self, words: list[str], vectors: np.ndarray, source: Path):
        self.words, self.vectors, self.source = words, vectors, source
        self.index = dict(zip(words, range(len(words))))

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def rows(self, words: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors [n, dim] float32 of `words` (zeros for words the table lacks) and found [n] bool."""
        ids = np.fromiter((self.index.get(w, -1) for w in words), dtype=np.int64)
        found = ids >= 0
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        if found.any():
            unique, inverse = np.unique(ids[found], return_inverse=True)  # sorted reads from the map
            out[found] = np.asarray(self.vectors[unique])[inverse]
        return out, found


def open_word_vectors(path: str | Path, dim: int) -> WordVectors:
    """The table of a GloVe-format text file or zip, parsed on first use and cached (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise TalInputError(f"{path}: word vector file not found (model.text.word_vectors); {GLOVE_HINT}")
    member = _zip_member(path, dim) if zipfile.is_zipfile(path) else None
    stat = path.stat()
    stamp = {"version": CACHE_VERSION, "source_bytes": stat.st_size, "source_mtime_ns": stat.st_mtime_ns,
             "member": member, "dim": dim}
    cache = _cache_dir(path, member)
    table = _read_cache(cache, stamp, path)
    if table is None:
        _write_cache(path, member, dim, cache, stamp)
        table = _read_cache(cache, stamp, path)
    return table


def _zip_member(path: Path, dim: int) -> str:
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith(".txt")]
    if len(names) == 1:
        return names[0]
    matching = [n for n in names if n.endswith(f".{dim}d.txt")]
    if len(matching) != 1:
        raise TalInputError(f"{path}: the zip holds {names or 'no .txt files'}, none of them the only one ending "
                            f"in .{dim}d.txt (model.text.embed_dim={dim}); {GLOVE_HINT}")
    return matching[0]


def _cache_dir(path: Path, member: str | None) -> Path:
    name = f"{path.name}.{Path(member).stem}" if member else path.name
    beside = path.parent / f"{name}.tal-cache"
    if beside.is_dir() or os.access(path.parent, os.W_OK):
        return beside
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tal" / "word-vectors" / f"{name}-{digest}"


def _read_cache(cache: Path, stamp: dict, source: Path) -> WordVectors | None:
    try:
        saved = json.loads((cache / "source.json").read_text())
    except (OSError, ValueError):
        return None
    if {k: saved.get(k) for k in stamp} != stamp:
        return None
    words = (cache / "words.txt").read_text(encoding="utf-8").split("\n")[:-1]
    if len(words) != saved.get("count") or (cache / "vectors.f32").stat().st_size != len(words) * stamp["dim"] * 4:
        return None
    vectors = np.memmap(cache / "vectors.f32", dtype=np.float32, mode="r", shape=(len(words), stamp["dim"]))
    return WordVectors(words, vectors, source)


def _write_cache(path: Path, member: str | None, dim: int, cache: Path, stamp: dict) -> None:
    """Parse the source into a fresh folder beside `cache`, then rename it into place (atomic for readers)."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=cache.name + ".", dir=cache.parent))
    try:
        with _open_source(path, member) as stream, (work / "vectors.f32").open("wb") as out:
            words = _parse(stream, dim, f"{path}:{member}" if member else str(path), out)
        (work / "words.txt").write_text("".join(w + "\n" for w in words), encoding="utf-8")
        (work / "source.json").write_text(json.dumps({**stamp, "count": len(words)}))
        if cache.exists():
            shutil.rmtree(cache, ignore_errors=True)  # stale: its source changed
        try:
            os.replace(work, cache)
        except OSError:
            pass  # another process put its cache in place first; the same source gives the same cache
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def _open_source(path: Path, member: str | None) -> Iterator[IO[bytes]]:
    if member is None:
        with path.open("rb") as stream:
            yield stream
        return
    with zipfile.ZipFile(path) as archive, archive.open(member) as stream:
        yield io.BufferedReader(stream, 1 << 20)  # its C readline is twice as fast as the member's own


def _parse(stream: IO[bytes], dim: int, where: str, out: IO[bytes]) -> list[str]:
    """Write the vectors of the stream's lines to `out` (float32, row after row); return their words."""
    words: list[str] = []
    seen: set[str] = set()
    for lines in _chunks(stream, where, dim):
        parsed_words, vectors = _parse_chunk(lines, dim, where)
        keep = []
        for i, word in enumerate(parsed_words):
            if word not in seen and "\n" not in word:
                seen.add(word)
                keep.append(i)
        words.extend(parsed_words[i] for i in keep)
        out.write(np.ascontiguousarray(vectors[keep] if len(keep) < len(parsed_words) else vectors).tobytes())
    if not words:
        raise TalInputError(f"{where}: no word vectors in the file (model.text.word_vectors); {GLOVE_HINT}")
    return words


def _chunks(stream: IO[bytes], where: str, dim: int) -> Iterator[list[tuple[int, str]]]:
    """The stream's lines as chunks of (line number, text), header and blank lines dropped."""
    chunk: list[tuple[int, str]] = []
    first_checked = False
    for lineno, raw in enumerate(stream, 1):
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n").rstrip(" ")
        if not line:
            continue
        if not first_checked:
            num_fields = line.count(" ") + 1
            if lineno == 1 and num_fields == 2 and line.replace(" ", "").isdigit():
                continue  # word2vec header
            if num_fields != dim + 1:
                raise TalInputError(f"{where}:{lineno}: expected a word and {dim} numbers, got {num_fields} fields "
                                    f"(model.text.embed_dim must be the file's vector dimension)")
            first_checked = True
        chunk.append((lineno, line))
        if len(chunk) == CHUNK_LINES:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _parse_chunk(lines: list[tuple[int, str]], dim: int, where: str) -> tuple[list[str], np.ndarray]:
    """Words and vectors [n, dim] of a chunk: one C-speed parse of all numbers, line by line only on a mismatch
    (a word with spaces, a bad line: the slow path finds which and says so)."""
    heads, tails = zip(*(line.partition(" ")[::2] for _, line in lines))
    try:
        numbers = np.loadtxt(io.StringIO("\n".join(tails)), dtype=np.float32, delimiter=" ", comments=None, ndmin=2)
    except ValueError:
        numbers = np.empty((0, dim), dtype=np.float32)
    if numbers.shape == (len(lines), dim):
        return list(heads), numbers
    words, vectors = [], np.empty((len(lines), dim), dtype=np.float32)
    for row, (lineno, line) in enumerate(lines):
        fields = line.rsplit(" ", dim)
        if line.count(" ") < dim:
            raise TalInputError(f"{where}:{lineno}: expected a word and {dim} numbers, got {line.count(' ') + 1} "
                                f"fields (model.text.embed_dim must be the file's vector dimension)")
        try:
            vectors[row] = np.asarray(fields[1:], dtype=np.float32)
        except ValueError:
            raise TalInputError(f"{where}:{lineno}: the {dim} values after the word are not all numbers") from None
        words.append(fields[0])
    return words, vectors
