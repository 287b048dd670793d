"""The M2 guide: q(y | x) q(z | x, y), y enumerated where it is not observed."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from pyrovae.naming import unique_name
from pyrovae.nn import mlp

from .categorical import CategoricalLatentGuide
from .encoders import MLPEncoder
from .families import make_head


class SemiSupervisedGuide(CategoricalLatentGuide):
    """q(y | x) is its own MLP on x (the classifier the M2 model also scores); see
    :class:`~guides.categorical.CategoricalLatentGuide`."""

    def __init__(self, encoder, classifier_net, z_net, z_head, num_classes: int, name=None):
        super().__init__(encoder, z_net, z_head, num_classes, name or unique_name("m2_guide"))
        self.classifier_net = classifier_net

    def class_logits(self, x, features):
        return self.classifier_net(x)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y | x), shape ``(..., K)``."""
        return self.classifier_net(x)


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
