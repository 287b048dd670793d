"""The M2 guide: q(y | x) q(z | x, y), y enumerated where it is not observed."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import one_hot

from pyrovae.naming import unique_name
from pyrovae.nn import concat_broadcast, mlp

from .encoders import MLPEncoder
from .families import make_head


class SemiSupervisedGuide(nn.Module):
    """``guide(x, y=None)``: y_n ~ q(y | x_n) (enumerated) unless given, z_n ~ q(z | x_n, y_n)."""

    def __init__(self, encoder, classifier_net, z_net, z_head, num_classes: int, name=None):
        super().__init__()
        self.encoder = encoder
        self.classifier_net = classifier_net
        self.z_net = z_net
        self.head = z_head
        self.num_classes = num_classes
        self.name = name or unique_name("m2_guide")

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y | x), shape ``(..., K)``."""
        return self.classifier_net(x)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0], device=x.device):
            if y is None:
                y = pyro.sample(
                    "y",
                    dist.Categorical(logits=self.classify(x)),
                    infer={"enumerate": "parallel"},
                )
            features = self.encoder(x)
            code = one_hot(y, self.num_classes).to(features.dtype)
            pyro.sample("z", self.head(self.z_net(concat_broadcast(features, code))))

    guide = forward

    def posterior(self, x: torch.Tensor) -> dist.Distribution:
        return dist.Categorical(logits=self.classify(x))


def build_m2_guide(
    data_dim: int,
    latent_dim: int,
    family: str = "diagonal",
    hidden: Sequence[int] = (256,),
    activation: str = "relu",
    name: str | None = None,
    *,
    num_classes: int = 10,
    **family_options,
) -> SemiSupervisedGuide:
    """A classifier MLP ``D -> hidden... -> K``, an encoder for z, and q(z | x, y) from a
    registered ``family`` head over an MLP of [features, one_hot(y)]."""
    classifier_net = mlp(data_dim, hidden, num_classes, activation)
    encoder = MLPEncoder(data_dim, hidden, activation)
    width = encoder.out_features
    z_net = mlp(width + num_classes, [width], None, activation)
    head = make_head(family, width, latent_dim, **family_options)
    return SemiSupervisedGuide(encoder, classifier_net, z_net, head, num_classes, name)
