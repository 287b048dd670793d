"""Small networks shared by encoders and decoders."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pyrovae.errors import PyrovaeError, unknown_name


class GatedDense(nn.Module):
    """``h = (W1 x + b1) * sigmoid(W2 x + b2)``: the gated dense layer of the VampPrior paper."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.gate = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * torch.sigmoid(self.gate(x))


_ACTIVATIONS = {"relu": nn.ReLU, "softplus": nn.Softplus, "tanh": nn.Tanh, "gelu": nn.GELU}
HIDDEN_LAYERS = (*_ACTIVATIONS, "gated")


def mlp(
    in_features: int, hidden: Sequence[int], out_features: int | None, activation: str = "relu"
) -> nn.Sequential:
    """A multilayer perceptron ``in -> hidden... -> out`` (no output nonlinearity).

    With ``out_features=None`` the network ends at the last hidden layer (a feature
    extractor). ``activation="gated"`` uses :class:`GatedDense` hidden layers.
    """
    if activation not in HIDDEN_LAYERS:
        raise unknown_name("activation", activation, HIDDEN_LAYERS)
    sizes = {"input width": in_features, "output width": out_features}
    sizes.update({f"hidden layer {i + 1}": h for i, h in enumerate(hidden)})
    for what, size in sizes.items():
        if size is not None and (not isinstance(size, int) or size < 1):
            raise PyrovaeError(
                f"a network's {what} must be an integer >= 1, got {size!r} (latent_dim, the "
                "data's feature count and --hidden sizes must all be positive)"
            )
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        if activation == "gated":
            layers.append(GatedDense(width, h))
        else:
            layers += [nn.Linear(width, h), _ACTIVATIONS[activation]()]
        width = h
    if out_features is not None:
        layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def output_width(network: nn.Sequential, in_features: int) -> int:
    """The feature width a network returns for inputs of width ``in_features``."""
    for layer in reversed(network):
        if isinstance(layer, nn.Linear):
            return layer.out_features
        if isinstance(layer, GatedDense):
            return layer.linear.out_features
    return in_features


def concat_broadcast(*tensors: torch.Tensor) -> torch.Tensor:
    """Concatenate along the last axis after broadcasting every other axis: e.g. features
    ``(B, F)`` with ``one_hot(y)`` of an enumerated y ``(K, 1, C)`` give ``(K, B, F + C)``."""
    batch = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(*batch, t.shape[-1]) for t in tensors], -1)
