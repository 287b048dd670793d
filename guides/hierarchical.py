"""The guide of the two-layer hierarchical VAE: q(z2 | x) q(z1 | x, z2).

The top layer uses any registered guide family (its head reads the encoder's features of
x); the bottom layer is a diagonal Normal over a network of x and z2, in one of two
layouts:

- shared (the default): one hidden layer of [the top encoder's features of x, z2];
- branches (``bottom_branches=True``, the published two-level HVAE's q(z1 | x, z2)): x
  and z2 each through a hidden layer of their own, then a joint one
  (:class:`~pyrovae.nn.TwoBranchNet`).

Features of x are expanded over leading sample dimensions of z2, so the guide runs
inside the estimators' outer sample plates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.naming import unique_name
from pyrovae.nn import TwoBranchNet, concat_broadcast, mlp

from .encoders import MLPEncoder
from .families import make_head


class HierarchicalGuide(nn.Module):
    """Calling it runs the Pyro guide: z2_n ~ q(z2 | x_n), z1_n ~ q(z1 | x_n, z2_n)."""

    jit_static = True  # fit may replay a recording of the loss: see pyrovae.train.step

    def __init__(self, encoder, top_head, bottom_net, bottom_head, name=None):
        super().__init__()
        self.encoder = encoder
        self.head = top_head  # reported as the guide's family head
        self.bottom_net = bottom_net
        self.bottom_head = bottom_head
        self.name = name or unique_name("hguide")

    def forward(self, x: torch.Tensor) -> None:
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0], device=x.device):
            features = self.encoder(x)
            z2 = pyro.sample("z2", self.head(features))
            if isinstance(self.bottom_net, TwoBranchNet):  # its own branch of x
                hidden = self.bottom_net.combine(x, z2)
            else:
                hidden = self.bottom_net(concat_broadcast(features, z2))
            pyro.sample("z1", self.bottom_head(hidden))

    guide = forward

    def posterior(self, x: torch.Tensor) -> dist.Distribution:
        """q(z2 | x): the top layer's posterior map (what a VampPrior on z2 mixes)."""
        return self.head(self.encoder(x))


def build_hierarchical_guide(
    data_dim: int,
    latent_dim: int,
    family: str = "diagonal",
    hidden: Sequence[int] = (256,),
    activation: str = "relu",
    name: str | None = None,
    *,
    bottom_dim: int = 0,
    bottom_min_scale: float = 1e-3,
    bottom_max_scale: float = math.inf,
    bottom_branches: bool = False,
    **family_options,
) -> HierarchicalGuide:
    """Encoder ``D -> hidden...``; the top head is the registered ``family`` (size
    ``latent_dim``), the bottom a diagonal Normal (size ``bottom_dim`` or ``latent_dim``),
    its scales in ``[bottom_min_scale, bottom_max_scale]`` (the published HVAE keeps every
    log-variance in [-6, 2], a scale in [0.05, e]), over one hidden layer of ``[features, z2]``, or
    with ``bottom_branches`` over x and z2 in branches of their own joined by a hidden
    layer (the published layout: 784 -> 300 and 40 -> 300, then 600 -> 300)."""
    encoder = MLPEncoder(data_dim, hidden, activation)
    width = encoder.out_features
    d1 = bottom_dim or latent_dim
    top = make_head(family, width, latent_dim, **family_options)
    if bottom_branches:
        bottom_net = TwoBranchNet(data_dim, latent_dim, width, [width], None, activation)
    else:
        bottom_net = mlp(width + latent_dim, [width], None, activation)
    bottom = make_head(
        "diagonal", width, d1, min_scale=bottom_min_scale, max_scale=bottom_max_scale
    )
    return HierarchicalGuide(encoder, top, bottom_net, bottom, name)
