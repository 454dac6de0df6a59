"""GloVe files as published (text and zip), their binary cache, and the sentence input 2D-TAN builds from them."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tal.errors import TalInputError
from tal.models import word_vectors as wv
from tal.models.text import LSTMSentenceEncoder, Vocabulary, split_tokens
from tal.models.word_vectors import open_word_vectors

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The published layout: a word, then its numbers, single spaces, one word a line (glove.6B.*d.txt).
GLOVE_LINES = [
    "the 0.418 0.24968 -0.41242 0.1217",
    ", 0.013441 0.23682 -0.16899 0.40951",
    ". 0.15164 0.30177 -0.16763 0.17684",
    "person 0.61183 -0.22072 -0.10898 -0.052967",
    "door -0.46335 0.16562 0.23451 -0.56101",
    "zebra 0.34892 0.67458 -0.5094 0.096563",
]


def write_glove(path: Path, lines: list[str] = GLOVE_LINES) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_text_file_loads_and_the_second_read_comes_from_the_memory_mapped_cache(tmp_path, monkeypatch):
    path = write_glove(tmp_path / "glove.6B.4d.txt")
    table = open_word_vectors(path, 4)
    assert table.words == ["the", ",", ".", "person", "door", "zebra"] and table.dim == 4
    assert np.array_equal(table.vectors[4], np.float32([-0.46335, 0.16562, 0.23451, -0.56101]))
    assert (tmp_path / "glove.6B.4d.txt.tal-cache" / "vectors.f32").stat().st_size == 6 * 4 * 4

    monkeypatch.setattr(wv, "_parse", lambda *a: pytest.fail("the cached table was parsed again"))
    cached = open_word_vectors(path, 4)
    assert isinstance(cached.vectors, np.memmap) and cached.words == table.words
    vectors, found = cached.rows(["zebra", "unicorn", "the"])
    assert found.tolist() == [True, False, True]
    assert np.array_equal(vectors[0], np.float32([0.34892, 0.67458, -0.5094, 0.096563]))
    assert not vectors[1].any()  # a word GloVe lacks: zeros, as 2D-TAN's <unk>


def test_a_changed_file_is_parsed_again(tmp_path):
    path = write_glove(tmp_path / "g.txt")
    open_word_vectors(path, 4)
    write_glove(path, ["door 1 2 3 4", "the 5 6 7 8"])
    table = open_word_vectors(path, 4)
    assert table.words == ["door", "the"] and table.vectors[1].tolist() == [5, 6, 7, 8]


def test_the_published_zip_loads_its_member_of_the_asked_dimension(tmp_path):
    text = write_glove(tmp_path / "src.txt")
    archive = tmp_path / "glove.6B.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:  # glove.6B.zip holds 50d..300d files
        z.writestr("glove.6B.2d.txt", "the 1 2\ndoor 3 4\n")
        z.write(text, "glove.6B.4d.txt")
    table = open_word_vectors(archive, 4)
    assert table.words[-1] == "zebra" and table.vectors[0].tolist() == pytest.approx([0.418, 0.24968, -0.41242, 0.1217])
    assert open_word_vectors(archive, 2).vectors[1].tolist() == [3, 4]
    with pytest.raises(TalInputError, match=r"glove.6B.zip: the zip holds .* ending in .300d.txt"):
        open_word_vectors(archive, 300)


def test_missing_file_names_the_file_where_glove_is_published_and_the_config_key(tmp_path):
    missing = tmp_path / "glove.6B.300d.txt"
    with pytest.raises(TalInputError) as err:
        open_word_vectors(missing, 300)
    message = str(err.value)
    assert message.startswith(f"{missing}: word vector file not found")
    assert "Stanford NLP GloVe page" in message and "glove.6B.zip" in message
    assert "model.text.word_vectors" in message and "\n" not in message


def test_split_tokenizer_is_2dtans_sentence_split_lowercased():
    # 2D-TAN: [w.lower() for w in sentence.split()]; punctuation stays on its word
    assert split_tokens("The person puts the cup down, then leaves.") == [
        "the", "person", "puts", "the", "cup", "down,", "then", "leaves."]
    assert split_tokens("  A  man\tjumps\n") == ["a", "man", "jumps"]


def test_test_only_words_get_their_glove_vector_with_the_glove_vocabulary(tmp_path):
    path = write_glove(tmp_path / "g.txt")
    torch.manual_seed(0)
    glove = LSTMSentenceEncoder(None, embed_dim=4, hidden_dim=6, num_layers=1, word_vectors=str(path)).eval()
    batch = glove.prepare(["The zebra", "a person opens the door ,"])
    assert batch["words"].shape == (2, 6, 4) and batch["word_mask"].sum(1).tolist() == [2, 6]
    rows = dict(zip(["the", ",", ".", "person", "door", "zebra"],
                    torch.tensor([[float(x) for x in line.split()[1:]] for line in GLOVE_LINES])))
    assert torch.equal(batch["words"][0, 1], rows["zebra"])  # never in any training sentence
    assert torch.equal(batch["words"][1, 5], rows[","])
    assert not batch["words"][1, [0, 2]].any()  # "a", "opens": not in the file, zero vectors
    assert not batch["words"][0, 2:].any()  # padding
    assert {k for k in glove.state_dict() if not k.startswith("lstm.")} == {"_extra_state"}  # no 400k-row table

    # tal's training vocabulary: the same file, but a word seen only at test time is <unk> (zeros)
    vocab = Vocabulary.from_sentences(["the person opens the door"])
    train_only = LSTMSentenceEncoder(vocab, embed_dim=4, hidden_dim=6, num_layers=1, word_vectors=str(path),
                                     vocabulary="train")
    assert not train_only.embedding(train_only.prepare(["the zebra"])["words"])[0, 1].any()


def test_glove_vocabulary_refuses_learned_missing_words(tmp_path):
    path = write_glove(tmp_path / "g.txt")
    with pytest.raises(TalInputError, match="missing_words=learned needs model.text.vocabulary=train"):
        LSTMSentenceEncoder(None, embed_dim=4, hidden_dim=6, word_vectors=str(path), missing_words="learned")


def test_checkpoints_from_before_named_tokenizers_keep_tals_tokenizer():
    from tal.tasks import build_task

    cfg = {"task": "grounding", "model": {"name": "2dtan", "num_clips": 4, "hidden_dim": 4, "map_kernel": 3,
                                          "map_layers": 1, "text": {"embed_dim": 4, "hidden_dim": 4, "num_layers": 1}}}
    vocab = ["<pad>", "<unk>", "door"]
    old = build_task(cfg, meta={"input_dim": 3, "vocab": vocab}).build_model()
    new = build_task(cfg, meta={"input_dim": 3, "vocab": vocab, "tokenizer": "split"}).build_model()
    assert old.text.vocab.encode("the door.") == [1, 2]  # tal's tokenizer: "door." -> "door"
    assert new.text.vocab.encode("the door.") == [1, 1]  # 2D-TAN's: "door." is its own (unknown) word
