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


class TwoBranchNet(nn.Module):
    """``f(a, b) = joint([branch_a(a), branch_b(b)])``: each input through its own hidden
    layer of ``branch_width`` units, the two feature vectors concatenated (``2 x
    branch_width``) and through the ``joint`` network ``joint_hidden... -> out``. The
    layout of the published two-level HVAE's q(z1 | x, z2) and p(x | z1, z2) (Tomczak &
    Welling 2018, ``HVAE_2level.py``: a gated layer of 300 per input, then one of 600 ->
    300). Leading dimensions are broadcast after the branches, so an input without the
    sample dimensions of the other (x beside draws of z2) runs its branch once.

    Called with one tensor ``v = [a, b]`` (``first_features`` entries of a, then b along
    the last axis) it splits it: a drop-in decoder of ``[z1, z2]``.
    """

    def __init__(
        self,
        first_features: int,
        second_features: int,
        branch_width: int,
        joint_hidden: Sequence[int],
        out_features: int | None,
        activation: str = "relu",
    ):
        super().__init__()
        self.first_features = first_features
        self.first_branch = mlp(first_features, [branch_width], None, activation)
        self.second_branch = mlp(second_features, [branch_width], None, activation)
        self.joint = mlp(2 * branch_width, joint_hidden, out_features, activation)

    def combine(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """``joint([branch_a(first), branch_b(second)])``, leading dimensions broadcast."""
        return self.joint(concat_broadcast(self.first_branch(first), self.second_branch(second)))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        first, second = v.split([self.first_features, v.shape[-1] - self.first_features], -1)
        return self.combine(first, second)
