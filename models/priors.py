"""Priors p(z): modules whose ``forward()`` returns a distribution with event shape ``(d,)``.

A prior is an ``nn.Module`` so that its constants live in registered buffers (they follow
``.to(device)``) and learnable priors (mixtures, VampPrior) keep their parameters in the
model. Inside the model's ``"data"`` plate Pyro broadcasts the prior to the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro.distributions as dist
import torch
from torch import nn


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I_d)."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


PRIORS: dict[str, Callable[..., nn.Module]] = {
    "standard": StandardNormalPrior,
}


def make_prior(name: str, latent_dim: int, **kwargs) -> nn.Module:
    """Build a registered prior by name."""
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}; choose one of {sorted(PRIORS)}")
    return PRIORS[name](latent_dim, **kwargs)
