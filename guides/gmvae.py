"""The GMVAE guide: q(y | x) q(z | x, y), y enumerated in parallel (TraceEnum_ELBO).

Under enumeration y arrives as a tensor of all K values with shape ``(K, 1)`` (to the
left of the data plate); the z network reads [features(x), one_hot(y)] broadcast to
``(K, B, ...)``, so every cluster's q(z | x, y) is computed in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pyrovae.naming import unique_name
from pyrovae.nn import mlp

from .categorical import CategoricalLatentGuide
from .encoders import MLPEncoder
from .families import make_head


class GMVAEGuide(CategoricalLatentGuide):
    """q(y | x) is a linear classifier on the encoder's features; see
    :class:`~guides.categorical.CategoricalLatentGuide`."""

    def __init__(self, encoder, classifier, z_net, z_head, num_clusters: int, name=None):
        super().__init__(encoder, z_net, z_head, num_clusters, name or unique_name("gmvae_guide"))
        self.classifier = classifier

    def class_logits(self, x, features):
        return self.classifier(self.encoder(x) if features is None else features)

    def cluster_logits(self, x: torch.Tensor) -> torch.Tensor:
        """log q(y | x) up to a constant, shape ``(B, K)``."""
        return self.class_logits(x, None)


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
