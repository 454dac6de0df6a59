"""Build LeYangNwpu/A2Net's model and training loss from a checkout outside the project, with a tal head's weights.

Nothing of the official code is kept in tal: `load_official(path)` imports `lib/models/a2net.py`,
`lib/core/loss.py` and `lib/core/ab_match.py` from the checkout at run time. Get one with
`git clone https://github.com/LeYangNwpu/A2Net /tmp/official/A2Net`. Two things are worked around, neither
changes a number:
- `lib/core/__init__.py` imports the evaluation loop (pandas); the `core` package is made without it,
  and when pandas is not installed an empty `pandas` module stands in (only the evaluation helpers of
  `core/utils_ab.py` use it; `jaccard_with_anchors`, which the matching calls, does not);
- the config is read from the checkout's `experiments/A2Net_thumos.yaml` with PyYAML into attribute
  namespaces (the official `lib/config` needs easydict); BATCH_SIZE and NEGATIVE_RATIO can be overridden.

Weight mapping (`official_copy`): every parameter of the official `LocNet` that the forward pass uses
has one tal counterpart of the same shape (base convs, the six pyramid convs, the six anchor-based
prediction convs, the six 1x1 reductions, the shared anchor-free towers and outputs, the six level
scales); the official `LocNetAF.scale6` is never used by its forward pass and keeps its initial 1.0.
"""
from __future__ import annotations

import sys
import types
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from tal.models.a2net import A2Net


def namespace_config(yaml_file: Path, **train_overrides) -> SimpleNamespace:
    """The official YAML as cfg.SECTION.KEY namespaces (dict values such as NUM_ANCHORS stay dicts)."""
    import yaml

    raw = yaml.safe_load(Path(yaml_file).read_text())
    sections = {name: SimpleNamespace(**values) for name, values in raw.items()}
    for key, value in train_overrides.items():
        setattr(sections["TRAIN"], key, value)
    return SimpleNamespace(**sections)


def load_official(checkout: Path):
    """(models.a2net, core.loss, core.ab_match) imported from `checkout`/lib."""
    lib = Path(checkout) / "lib"
    if not (lib / "models" / "a2net.py").is_file() or not (lib / "core" / "ab_match.py").is_file():
        raise SystemExit(f"{checkout} is not an A2Net checkout (no lib/models/a2net.py, lib/core/ab_match.py); "
                         "git clone https://github.com/LeYangNwpu/A2Net /tmp/official/A2Net")
    for name in ("models", "core"):  # core/__init__.py pulls in the evaluation loop
        package = types.ModuleType(name)
        package.__path__ = [str(lib / name)]
        sys.modules.setdefault(name, package)
    try:
        import pandas  # noqa: F401
    except ImportError:
        sys.modules.setdefault("pandas", types.ModuleType("pandas"))
    import core.ab_match as ab_match
    import core.loss as loss
    import models.a2net as a2net

    return a2net, loss, ab_match


def official_copy(a2net_module, cfg: SimpleNamespace, model: A2Net) -> nn.Module:
    """The official LocNet with `model`'s weights: the same function of the same inputs."""
    official = a2net_module.LocNet(cfg)
    feats, af, ab = official.features, official.af, official.ab
    pairs = [(feats.base_feature_net.conv1, model.pyramid.base[0]), (feats.base_feature_net.conv2, model.pyramid.base[1])]
    pairs += [(getattr(feats, f"conv{i + 1}"), conv) for i, conv in enumerate(model.pyramid.levels)]
    pairs += [(getattr(ab, f"pred{i + 1}"), conv) for i, conv in enumerate(model.ab_head.convs)]
    head = model.af_head
    pairs += [(getattr(af.reduce_channels, f"conv{i + 1}"), conv) for i, conv in enumerate(head.reduce)]
    for branch, tower, out in ((af.pred.cls_branch, head.cls_tower, head.cls_out),
                               (af.pred.reg_branch, head.reg_tower, head.reg_out)):
        pairs += [(branch.conv1, tower[0]), (branch.conv2, tower[1]), (branch.pred, out)]
    with torch.no_grad():
        for theirs, ours in pairs:
            if theirs.weight.shape != ours.weight.shape:
                raise ValueError(f"official {theirs} and tal {ours} differ in shape")
            theirs.weight.copy_(ours.weight)
            theirs.bias.copy_(ours.bias)
        for level in range(len(head.scales)):
            getattr(af, f"scale{level}").scale.copy_(head.scales[level : level + 1])
    return official
