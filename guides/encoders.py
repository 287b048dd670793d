"""Encoders: networks mapping x of shape ``(..., D)`` to features of shape ``(..., F)``.

A guide family's head turns the features into a distribution, so one encoder serves every
family.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pyrovae.errors import PyrovaeError
from pyrovae.nn import mlp, output_width


class MLPEncoder(nn.Module):
    """``x -> hidden... -> features``: an MLP whose last hidden layer is the feature layer."""

    def __init__(self, data_dim: int, hidden: Sequence[int] = (256,), activation: str = "relu"):
        super().__init__()
        if not hidden:
            raise PyrovaeError("MLPEncoder needs at least one hidden layer, e.g. hidden=(256,)")
        self.data_dim = data_dim
        self.net = mlp(data_dim, hidden, None, activation)
        self.out_features = output_width(self.net, data_dim)

    def forward(self, x):
        return self.net(x)
