"""The weight-free handcrafted descriptor as a registered backbone (tal.features.handcrafted)."""
from __future__ import annotations

import torch

from tal.errors import TalInputError
from tal.features.backbones.base import FRAME_WINDOW, BackboneEntry, BackboneSpec, LoadedWeights, Preprocessor
from tal.registry import BACKBONES


def _spec() -> BackboneSpec:
    from tal.features import handcrafted

    return BackboneSpec(
        name="handcrafted", feature_dim=handcrafted.FEATURE_DIM, kind="descriptor", input_size=handcrafted.FRAME_SIZE,
        default_window=FRAME_WINDOW, default_fps=None, weights="none", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
        resize_size=(handcrafted.FRAME_SIZE, handcrafted.FRAME_SIZE),
        reproduces="none: tal's own colour / motion descriptor (tal demo)",
    )


def _build(spec: BackboneSpec, weights: str | None) -> tuple[torch.nn.Module, Preprocessor, LoadedWeights]:
    from tal.features.handcrafted import HandcraftedDescriptor

    if weights not in (None, "random"):
        raise TalInputError(f"backbone handcrafted has no weights; drop --weights {weights}")
    preprocessor = Preprocessor("descriptor", spec.resize_size, spec.input_size, spec.mean, spec.std)
    return HandcraftedDescriptor(), preprocessor, LoadedWeights("none")


BACKBONES.register("handcrafted")(BackboneEntry(spec=_spec, build=_build))
