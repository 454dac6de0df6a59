"""The part shared by frozen pretrained sentence encoders (MiniLM, CLIP): the batch entry is
"sentence_vectors", computed by the subclass's `encode(sentences) -> [B, out_dim]`."""
from __future__ import annotations

from abc import ABCMeta, abstractmethod

import torch
from torch import nn


class FrozenSentenceEncoder(nn.Module, metaclass=ABCMeta):
    @abstractmethod
    def encode(self, sentences: list[str]) -> torch.Tensor:
        """[B, out_dim] float32 sentence vectors on the CPU."""

    def prepare(self, sentences: list[str]) -> dict[str, torch.Tensor]:
        return {"sentence_vectors": self.encode(sentences)}

    def forward(self, batch: dict) -> torch.Tensor:
        if "sentence_vectors" in batch:
            return batch["sentence_vectors"]
        return self.encode(batch["sentences"])
