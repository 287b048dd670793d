"""The GMVAE guide: q(y | x) q(z | x, y), y enumerated in parallel (TraceEnum_ELBO).

Under enumeration y arrives as a tensor of all K values with shape ``(K, 1)`` (to the
left of the data plate); the z network reads [features(x), one_hot(y)] broadcast to
``(K, B, ...)``, so every cluster's q(z | x, y) is computed in one pass.
"""

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


class GMVAEGuide(nn.Module):
    """Calling it runs the guide: y_n ~ q(y | x_n) (enumerated), z_n ~ q(z | x_n, y_n)."""

    def __init__(self, encoder, classifier, z_net, z_head, num_clusters: int, name=None):
        super().__init__()
        self.encoder = encoder
        self.classifier = classifier
        self.z_net = z_net
        self.head = z_head
        self.num_clusters = num_clusters
        self.name = name or unique_name("gmvae_guide")

    def cluster_logits(self, x: torch.Tensor) -> torch.Tensor:
        """log q(y | x) up to a constant, shape ``(B, K)``."""
        return self.classifier(self.encoder(x))

    def forward(self, x: torch.Tensor) -> None:
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0], device=x.device):
            features = self.encoder(x)
            y = pyro.sample(
                "y",
                dist.Categorical(logits=self.classifier(features)),
                infer={"enumerate": "parallel"},
            )
            code = one_hot(y, self.num_clusters).to(features.dtype)
            pyro.sample("z", self.head(self.z_net(concat_broadcast(features, code))))

    guide = forward

    def posterior(self, x: torch.Tensor) -> dist.Distribution:
        """q(y | x), batch shape ``(B,)``."""
        return dist.Categorical(logits=self.cluster_logits(x))


def build_gmvae_guide(
    data_dim: int,
    latent_dim: int,
    family: str = "diagonal",
    hidden: Sequence[int] = (256,),
    activation: str = "relu",
    name: str | None = None,
    *,
    num_clusters: int = 10,
    **family_options,
) -> GMVAEGuide:
    """Encoder ``D -> hidden...``, a linear classifier to K logits, and q(z | x, y) from a
    registered ``family`` head over an MLP of [features, one_hot(y)]."""
    encoder = MLPEncoder(data_dim, hidden, activation)
    width = encoder.out_features
    classifier = nn.Linear(width, num_clusters)
    z_net = mlp(width + num_clusters, [width], None, activation)
    head = make_head(family, width, latent_dim, **family_options)
    return GMVAEGuide(encoder, classifier, z_net, head, num_clusters, name)
