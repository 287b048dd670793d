"""N(0, 1) per coordinate, as a :class:`~pyro.distributions.Normal` that knows it is one."""

from __future__ import annotations

import pyro.distributions as dist
import torch


class StandardNormal(dist.Normal):
    """``Normal(0, 1)`` with the batch shape of ``zeros``: every density, draw and shape of
    ``dist.Normal(zeros, ones)``, and one difference: ``kl_divergence(Normal(m, s), it)``
    dispatches to the closed form for a standard normal (``pyrovae.distributions.kl``),
    ``1/2 (s^2 + m^2 - 1) - log s`` per coordinate, about half the tensor operations of
    the general Normal-Normal KL, in the forward and the backward pass."""

    def __init__(self, zeros: torch.Tensor, validate_args: bool | None = None):
        super().__init__(zeros, torch.ones_like(zeros), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(StandardNormal, _instance)
        return super().expand(batch_shape, _instance=new)
