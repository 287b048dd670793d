"""The uniform distribution on the unit sphere S^{d-1} in R^d: the hyperspherical prior."""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution, constraints

from pyrovae.errors import PyrovaeError

from .sphere import log_sphere_area


class HypersphericalUniform(TorchDistribution):
    """p(z) = 1 / area(S^{d-1}) for unit vectors z in R^d (d = ``dim`` >= 2).

    ``log_prob`` is the constant -log area(S^{d-1}) = -[log 2 + (d/2) log pi -
    lgamma(d/2)] nats; samples are normalised standard Normal vectors.

    Args:
        dim: the ambient dimension d (the sphere is S^{d-1}).
        batch_shape: batch shape of the distribution.
        dtype, device: of samples and log densities (pass the data's).
    """

    arg_constraints: dict = {}
    support = constraints.sphere
    has_rsample = False

    def __init__(
        self,
        dim: int,
        batch_shape: torch.Size | tuple = (),
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        validate_args=None,
    ):
        if dim < 2:
            raise PyrovaeError(f"the sphere S^(d-1) needs d >= 2, got d={dim}")
        self.dim = dim
        self._anchor = torch.zeros((), dtype=dtype, device=device)
        super().__init__(torch.Size(batch_shape), torch.Size([dim]), validate_args)

    def expand(self, batch_shape, _instance=None):
        return HypersphericalUniform(
            self.dim, batch_shape, dtype=self._anchor.dtype, device=self._anchor.device
        )

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        z = torch.randn(shape, dtype=self._anchor.dtype, device=self._anchor.device)
        return z / z.norm(dim=-1, keepdim=True)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        return self._anchor.new_full(shape, -log_sphere_area(self.dim)).to(value.dtype)

    def entropy(self):
        return self._anchor.new_full(self.batch_shape, log_sphere_area(self.dim))

    @property
    def mean(self):
        return self._anchor.new_zeros(self.batch_shape + self.event_shape)
