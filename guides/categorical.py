"""Guides with a categorical latent y above a continuous z: q(y | x) q(z | x, y).

y is enumerated in parallel (``TraceEnum_ELBO``) unless it is observed (``guide(x, y)``,
the labelled rows of a semi-supervised model); under enumeration y has shape ``(K, 1)``
and the z network reads [features(x), one_hot(y)] broadcast to ``(K, B, ...)``.
Subclasses say only how q(y | x) reads x (:meth:`class_logits`).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import one_hot

from pyrovae.nn import concat_broadcast


class CategoricalLatentGuide(nn.Module):
    """``guide(x, y=None)``: y_n ~ q(y | x_n) (enumerated) unless given, z_n ~ q(z | x_n, y_n)."""

    jit_static = True  # fit may replay a recording of the loss: see pyrovae.train.step

    def __init__(self, encoder, z_net, z_head, num_classes: int, name: str):
        super().__init__()
        self.encoder = encoder
        self.z_net = z_net
        self.head = z_head
        self.num_classes = num_classes
        self.name = name

    def class_logits(self, x: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        """Logits of q(y | x), shape ``(B, K)``; ``features`` = encoder(x) when at hand."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0], device=x.device):
            features = self.encoder(x)
            if y is None:
                y = pyro.sample(
                    "y",
                    dist.Categorical(logits=self.class_logits(x, features)),
                    infer={"enumerate": "parallel"},
                )
            code = one_hot(y, self.num_classes).to(features.dtype)
            pyro.sample("z", self.head(self.z_net(concat_broadcast(features, code))))

    guide = forward

    def posterior(self, x: torch.Tensor) -> dist.Distribution:
        """q(y | x), batch shape ``(B,)``."""
        return dist.Categorical(logits=self.class_logits(x, None))
