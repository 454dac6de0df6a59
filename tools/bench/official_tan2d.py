"""Build microsoft/2D-TAN's model from a checkout outside the project, with the weights of a tal head.

Nothing of the official code is kept in tal: `load_official(path)` imports its modules (lib/models) from
the checkout at run time. Get one with `git clone https://github.com/microsoft/2D-TAN /tmp/official/2D-TAN`.
Its map module builds a ones-kernel with `.cuda()` on every forward pass; on a machine without CUDA that
call is made a no-op for CPU tensors (`cpu_safe_cuda`), which changes no number.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from tal.models.tan2d import Tan2D


def cpu_safe_cuda() -> None:
    """Let `tensor.cuda()` return the tensor itself when CUDA is absent (the official map module calls it)."""
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *args, **kwargs: self


class OfficialTan(nn.Module):
    """The official TAN forward (lib/models/tan.py) assembled from its modules without its global config."""

    def __init__(self, modules, model: Tan2D, input_dim: int, prop: str, map_kernel: int, map_layers: int):
        super().__init__()
        frame_mod, prop_mod, fusion_mod, map_mod = modules
        hidden = model.map_proj.out_channels
        self.frame_layer = frame_mod.FrameAvgPool(SimpleNamespace(
            INPUT_SIZE=input_dim, HIDDEN_SIZE=hidden, KERNEL_SIZE=model.frame_stride, STRIDE=model.frame_stride))
        prop_cfg = SimpleNamespace(NUM_SCALE_LAYERS=model.scale_layers, HIDDEN_SIZE=hidden)
        self.prop_layer = (prop_mod.SparsePropMaxPool if prop == "pool" else prop_mod.SparsePropConv)(prop_cfg)
        lstm = model.text.lstm
        self.fusion_layer = fusion_mod.BaseFusion(SimpleNamespace(
            HIDDEN_SIZE=hidden, TXT_INPUT_SIZE=lstm.input_size, TXT_HIDDEN_SIZE=lstm.hidden_size,
            LSTM=SimpleNamespace(NUM_LAYERS=lstm.num_layers, BIDIRECTIONAL=False)))
        self.map_layer = map_mod.MapConv(SimpleNamespace(
            INPUT_SIZE=hidden, HIDDEN_SIZES=[hidden] * map_layers, KERNEL_SIZES=[map_kernel] * map_layers,
            STRIDES=[1] * map_layers, PADDINGS=[(map_kernel - 1) * map_layers // 2] + [0] * (map_layers - 1),
            DILATIONS=[1] * map_layers))
        self.pred_layer = nn.Conv2d(hidden, 1, 1, 1)

    def forward(self, textual_input, textual_mask, visual_input):
        vis_h = self.frame_layer(visual_input.transpose(1, 2))
        map_h, map_mask = self.prop_layer(vis_h)
        fused_h = self.fusion_layer(textual_input, textual_mask, map_h, map_mask)
        fused_h = self.map_layer(fused_h, map_mask)
        return self.pred_layer(fused_h) * map_mask, map_mask


def load_official(checkout: Path):
    """The official frame, prop, fusion and map module packages, imported from `checkout`/lib."""
    lib = Path(checkout) / "lib"
    if not (lib / "models" / "map_modules" / "map_conv.py").is_file():
        raise SystemExit(f"{checkout} is not a 2D-TAN checkout (no lib/models/map_modules/map_conv.py); "
                         "git clone https://github.com/microsoft/2D-TAN /tmp/official/2D-TAN")
    package = types.ModuleType("models")  # lib/models/__init__.py pulls in the training config (easydict)
    package.__path__ = [str(lib / "models")]
    sys.modules.setdefault("models", package)
    cpu_safe_cuda()
    import models.frame_modules as frame_mod
    import models.fusion_modules as fusion_mod
    import models.map_modules as map_mod
    import models.prop_modules as prop_mod

    return frame_mod, prop_mod, fusion_mod, map_mod


def official_copy(checkout: Path, model: Tan2D, input_dim: int, prop: str, map_kernel: int,
                  map_layers: int) -> OfficialTan:
    """The official model with `model`'s weights copied in: the same function of the same inputs."""
    official = OfficialTan(load_official(checkout), model, input_dim, prop, map_kernel, map_layers)
    pairs = [(official.frame_layer.vis_conv, model.frame.conv),
             (official.fusion_layer.textual_encoder, model.text.lstm),
             (official.fusion_layer.tex_linear, model.text_proj), (official.fusion_layer.vis_conv, model.map_proj),
             (official.pred_layer, model.score)]
    pairs += list(zip(official.map_layer.convs, model.map_conv.convs))
    if prop == "conv":
        pairs += list(zip([layer for scale in official.prop_layer.layers for layer in scale], model.prop.layers))
    with torch.no_grad():
        for theirs, ours in pairs:
            for name, value in ours.named_parameters():
                dict(theirs.named_parameters())[name].copy_(value)
    return official
