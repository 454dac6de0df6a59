"""CLIP's text encoder as a grounding sentence encoder (`model.text.encoder: clip`), the twin of the
`clip` image backbones: a 2D-TAN or MAN trained on CLIP image features then reads any sentence, in
CLIP's byte-pair vocabulary, not only the words of its training set.

Like the MiniLM encoder it is frozen and not a submodule (never trained, never written into tal
checkpoints); it is loaded on first use from `model.text.weights` (None: OpenAI's published file in the
torch hub cache, downloaded once; "random" for tests) with the image backbones' loader.
"""
from __future__ import annotations

import torch
from torch import nn

from tal.models.frozen_text import FrozenSentenceEncoder


class CLIPSentenceEncoder(FrozenSentenceEncoder):
    """Sentences -> [B, 512] CLIP text embeddings (the projected end-of-text token, not normalised)."""

    def __init__(self, clip_model: str = "ViT-B-32", weights: str | None = None):
        super().__init__()
        from tal.features.backbones.clip import BACKBONE_MODELS, embed_dim, require_open_clip

        require_open_clip("model.text.encoder=clip")
        if clip_model not in BACKBONE_MODELS.values():
            from tal.errors import TalInputError

            raise TalInputError(f"model.text.clip_model must be one of {sorted(BACKBONE_MODELS.values())}, "
                                f"got {clip_model!r}")
        self.clip_model, self.weights = clip_model, weights
        self.out_dim = embed_dim(clip_model)
        self._network = None
        self._tokenizer = None

    def _encoder(self):
        if self._network is None:
            import open_clip

            from tal.features.backbones.clip import load_clip

            network, _ = load_clip(self.clip_model, self.weights)
            network.visual = nn.Identity()  # the text side only
            object.__setattr__(self, "_network", network)  # not a submodule
            object.__setattr__(self, "_tokenizer", open_clip.get_tokenizer(self.clip_model))
        return self._network

    @torch.no_grad()
    def encode(self, sentences: list[str]) -> torch.Tensor:
        """[B, out_dim] float32 on the CPU."""
        network = self._encoder()
        return network.encode_text(self._tokenizer(list(sentences))).float().cpu()
