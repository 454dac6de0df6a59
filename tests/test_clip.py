"""CLIP backbones (open_clip, the `clip` extra) and the CLIP sentence encoder: OpenAI's published layout
(a TorchScript archive, written here with random weights) and plain state dicts load; per-frame image
embeddings averaged over the window; a 2D-TAN on CLIP features answers a sentence of words it never saw."""
from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import open_clip
import pytest
import torch

import tal
from tal.cli.main import main
from tal.features.backbones import Preprocessor, get_spec
from tal.features.decode import iter_clips
from tal.models.clip_text import CLIPSentenceEncoder

from backbone_checks import assert_differ, check_timing, extract, save_state, train_head, write_annotations

DEFAULTS = {"fps": 0.5, "window": 1, "stride": 1}
NOVEL = ("zebras juggle xylophones", "an astronaut repaints a lighthouse")  # no word of these is in training


def random_clip(name: str, seed: int) -> torch.nn.Module:
    logging.disable(logging.WARNING)
    try:
        torch.manual_seed(seed)
        return open_clip.create_model(name, pretrained=None, force_quick_gelu=True).eval()
    finally:
        logging.disable(logging.NOTSET)


def load_scripted(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    openai = root / "openai" / "ViT-B-32.pt"
    openai.parent.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; OpenAI's files are TorchScript
        torch.jit.script(random_clip("ViT-B-32", 1)).save(str(openai))
    return {"openai": openai,
            "other": save_state(random_clip("ViT-B-32", 2).state_dict(), root / "other" / "ViT-B-32.pt"),
            "b16": save_state(random_clip("ViT-B-16", 3).state_dict(), root / "b16" / "ViT-B-16.pt")}


@pytest.fixture(scope="module")
def carphone(sample_videos):
    return [next(p for p in sample_videos if p.stem == "carphone_distorted")]


def test_published_layouts_and_defaults():
    for name, patch, tokens in (("ViT-B-32", 32, 7 * 7 + 1), ("ViT-B-16", 16, 14 * 14 + 1)):
        state = random_clip(name, 0).state_dict()
        assert state["visual.conv1.weight"].shape == (768, 3, patch, patch)
        assert state["visual.positional_embedding"].shape == (tokens, 768) and state["visual.proj"].shape == (768, 512)
        assert state["token_embedding.weight"].shape == (49408, 512) and state["text_projection"].shape == (512, 512)
    for name in ("clip", "clip_vit_b16"):
        spec = get_spec(name)
        assert (spec.feature_dim, spec.kind, spec.input_size, spec.default_window, spec.default_stride,
                spec.default_fps) == (512, "frame", 224, 1, 1, 0.5)
    assert get_spec("clip").weights.startswith("OpenAI CLIP ViT-B-32.pt")


def test_image_embeddings_of_the_published_archive(files, carphone, tmp_path, one_torch_thread):
    a = extract(carphone, tmp_path / "a.h5", "clip", str(files["openai"]), DEFAULTS)
    check_timing(a, carphone, DEFAULTS, 512)  # 4 s of video: embeddings at 1 s and 3 s
    assert a["attrs"]["weights"].startswith("file:ViT-B-32.pt#sha256:")
    scripted = load_scripted(files["openai"])
    spec = get_spec("clip")
    preprocess = Preprocessor(spec.kind, spec.resize_size, spec.input_size, spec.mean, spec.std)
    clips = [clip for _, clip in iter_clips(carphone[0], 1, 1, 0.5, "pyav", 224)]
    with torch.no_grad():
        theirs = torch.cat([scripted.encode_image(preprocess(c[None])[0]) for c in clips])  # [2, 512]
    np.testing.assert_allclose(a["carphone_distorted"], theirs.numpy(), rtol=1e-4, atol=1e-4)
    assert_differ(a["carphone_distorted"], extract(carphone, tmp_path / "b.h5", "clip", str(files["other"]),
                                                   DEFAULTS)["carphone_distorted"])
    b16 = extract(carphone, tmp_path / "c.h5", "clip_vit_b16", str(files["b16"]), DEFAULTS)
    check_timing(b16, carphone, DEFAULTS, 512)


def test_text_encoder_equals_clip_encode_text(files):
    encoder = CLIPSentenceEncoder("ViT-B-32", str(files["openai"]))
    mine = encoder.encode(list(NOVEL))
    scripted = load_scripted(files["openai"])
    with torch.no_grad():
        theirs = scripted.encode_text(open_clip.get_tokenizer("ViT-B-32")(list(NOVEL)))
    assert mine.shape == (2, 512) and encoder.out_dim == 512
    torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)
    assert_differ(mine[0].numpy(), mine[1].numpy())
    assert "_network" not in dict(encoder.named_children()) and not list(encoder.state_dict())  # never saved


@pytest.mark.slow  # ~1 minute a head: CLIP loads twice; the encoder on unseen words is checked fast above
@pytest.mark.parametrize("head", ["2dtan", "man"])
def test_a_head_on_clip_features_answers_new_words(head, files, sample_videos, tmp_path, capsys):
    videos = [p for p in sample_videos if p.stem in ("bikes", "carphone_distorted")]
    features = tmp_path / "feats.h5"
    extract(videos, features, "clip", str(files["openai"]))
    detection, grounding = write_annotations(features, tmp_path)
    text = ["model.text.encoder=clip", f"+model.text.weights={files['openai']}", "+model.text.clip_model=ViT-B-32"]
    retriever = train_head("grounding", features, detection, grounding, tmp_path / "gnd", tuple(text), head)
    video = next(p for p in videos if p.stem == "carphone_distorted")
    capsys.readouterr()
    assert main(["query", "--checkpoint", str(retriever), "--video", str(video), NOVEL[0], "--top-k", "3"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert len(answer["moments"]) == 3 and "warnings" not in answer
    cached = tal.MomentRetriever.from_checkpoint(retriever, features=features)
    first, second = (cached.query("carphone_distorted", sentence, 3) for sentence in NOVEL)
    assert [m["score"] for m in first] == [m["score"] for m in answer["moments"]] and first.warnings == []
    assert [m["score"] for m in first] != [m["score"] for m in second]  # the unseen words change the answer
