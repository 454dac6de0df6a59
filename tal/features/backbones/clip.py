"""CLIP image embeddings per frame (open_clip, the optional `clip` extra): `clip` (ViT-B/32) and
`clip_vit_b16`, averaged over the window; one embedding every 2 seconds by default, the layout of the
CLIP features that moment-retrieval benchmarks (QVHighlights) distribute.

Weights are OpenAI's published files (`ViT-B-32.pt`, `ViT-B-16.pt`: TorchScript archives whose URL holds
their sha256), loaded as they are, or a plain state dict with the same key names (open_clip's own
layout). `load_clip` is shared with the CLIP sentence encoder (tal.models.clip_text), so image and text
sides load a file the same way.
"""
from __future__ import annotations

import importlib.util
import logging
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from tal.errors import TalInputError
from tal.features.backbones.base import (
    BackboneEntry, BackboneSpec, FramePooled, LoadedWeights, Preprocessor, load_state, loaded_file, read_state_file,
    seeded,
)
from tal.features.download import PublishedFile, published_path
from tal.registry import BACKBONES

_OPENAI = "https://openaipublic.azureedge.net/clip/models/"
PUBLISHED = {
    "ViT-B-32": PublishedFile(_OPENAI + "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
                              "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"),
    "ViT-B-16": PublishedFile(_OPENAI + "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
                              "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"),
}
BACKBONE_MODELS = {"clip": "ViT-B-32", "clip_vit_b16": "ViT-B-16"}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_NOT_WEIGHTS = ("input_resolution", "context_length", "vocab_size", "attn_mask")  # extras of OpenAI's archives


def require_open_clip(who: str) -> None:
    if importlib.util.find_spec("open_clip") is None:
        raise TalInputError(f"{who} needs the optional package open_clip_torch: pip install 'tal[clip]'")


def backbone_of(model_name: str) -> str:
    """The image backbone of an open_clip model name (whose published file both sides share)."""
    return next(name for name, model in BACKBONE_MODELS.items() if model == model_name)


def embed_dim(model_name: str) -> int:
    """The joint embedding size of an open_clip model (512 for ViT-B/32 and B/16), without building it."""
    import open_clip

    return int(open_clip.get_model_config(model_name)["embed_dim"])


def _read_clip_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from OpenAI's TorchScript archive or from a plain state dict file."""
    if not path.is_file():
        raise TalInputError(f"--weights {path}: no such file")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            scripted = any(name.endswith("/constants.pkl") for name in archive.namelist())
        if scripted:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; these files are TorchScript
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
            return {k: v for k, v in state.items() if k not in _NOT_WEIGHTS}
    return {k: v for k, v in read_state_file(path).items() if k not in _NOT_WEIGHTS}


def load_clip(model_name: str, weights: str | None) -> tuple[nn.Module, LoadedWeights]:
    """An open_clip CLIP model (QuickGELU, as OpenAI's weights) with `weights`: None = OpenAI's published
    file (torch hub cache, downloaded once, sha256 checked), "random" (seed 0) or a file path."""
    from tal.features.weights import RANDOM_ID

    who = backbone_of(model_name)
    require_open_clip(f"backbone {who}")
    import open_clip

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # open_clip logs "no pretrained weights" for pretrained=None
    try:
        model = seeded(lambda: open_clip.create_model(model_name, pretrained=None, force_quick_gelu=True))
    finally:
        logging.disable(previous)
    if weights == "random":
        return model.eval(), LoadedWeights(RANDOM_ID)
    path = published_path(who, PUBLISHED[model_name]) if weights is None else Path(weights)
    load_state(model, _read_clip_file(path), path, who)
    return model.eval(), loaded_file(path, f"openai:{PUBLISHED[model_name].file_name}" if weights is None else None)


def _spec(name: str) -> BackboneSpec:
    model_name = BACKBONE_MODELS[name]
    return BackboneSpec(
        name=name, feature_dim=512, kind="frame", input_size=224, default_window=1, default_fps=0.5,
        weights=f"OpenAI CLIP {PUBLISHED[model_name].file_name} (open_clip; pip install 'tal[clip]')",
        mean=CLIP_MEAN, std=CLIP_STD, resize_size=(224,), default_stride=1,
        reproduces=f"CLIP {model_name} image features, one every 2 s (QVHighlights / Moment-DETR layout)",
    )


def _build(spec: BackboneSpec, weights: str | None) -> tuple[nn.Module, Preprocessor, LoadedWeights]:
    model, loaded = load_clip(BACKBONE_MODELS[spec.name], weights)
    preprocessor = Preprocessor("frame", spec.resize_size, spec.input_size, spec.mean, spec.std)
    return FramePooled(model.visual), preprocessor, loaded


for _name in BACKBONE_MODELS:
    BACKBONES.register(_name)(BackboneEntry(spec=lambda n=_name: _spec(n), build=_build))
