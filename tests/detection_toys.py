"""The toy detection video, the short fit and the padding check shared by the detection heads' tests
(A2Net, TCN, S3D)."""
from __future__ import annotations

import torch
from torch import nn


def toy_batch(boundary_marks: bool = True) -> dict:
    """One video of 64 8-d steps: a short action of class 0 on [8, 12] and a long one of class 2 on [24, 56].

    Class c raises feature c over its instance; with `boundary_marks`, feature 4 marks each first step
    and feature 5 each last step; noise has std 0.1.
    """
    generator = torch.Generator().manual_seed(0)
    features = 0.1 * torch.randn(1, 64, 8, generator=generator)
    features[0, 8:12, 0] += 1.0
    features[0, 24:56, 2] += 1.0
    if boundary_marks:
        features[0, [8, 24], 4] += 1.0
        features[0, [11, 55], 5] += 1.0
    return {"features": features, "mask": torch.ones(1, 64, dtype=torch.bool),
            "segments": [torch.tensor([[8.0, 12.0], [24.0, 56.0]])], "labels": [torch.tensor([0, 2])]}


def fit(model: nn.Module, batch: dict, steps: int, lr: float = 3e-3) -> list[float]:
    """`steps` Adam steps on one batch (seeded); the loss before each step."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def assert_padding_invariant(model: nn.Module, dim: int = 8) -> tuple:
    """Assert that a 50-step video predicted alone and padded to 90 steps with junk, batched with a
    90-step one, gives the same predictions (the head's masks work); returns the predictions alone."""
    torch.manual_seed(1)
    short, long = torch.randn(1, 50, dim), torch.randn(1, 90, dim)
    alone = model.predict({"features": short, "mask": torch.ones(1, 50, dtype=torch.bool)})[0]
    features = torch.cat([torch.cat([short, 100 * torch.randn(1, 40, dim)], dim=1), long])  # junk after step 50
    mask = torch.ones(2, 90, dtype=torch.bool)
    mask[0, 50:] = False
    for a, b in zip(alone, model.predict({"features": features, "mask": mask})[0]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    return alone
