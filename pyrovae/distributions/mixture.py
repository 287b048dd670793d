"""A mixture whose K components are shared by every element of its batch: the form of the
mixture-of-Gaussians prior and the VampPrior.

    p(z) = sum_k pi_k p_k(z),    log p(z) = logsumexp_k [log pi_k + log p_k(z)]

The components form ONE distribution with batch shape ``(K,)`` (any family: Normal,
MultivariateNormal, flows, von Mises-Fisher...). Expanding the mixture to a plate's batch
does not copy them: ``log_prob`` broadcasts the value against the K components. For
diagonal Normal components the K log densities are computed with two matrix products
instead of a ``(..., K, d)`` tensor, which keeps a 500-component VampPrior cheap.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import Independent, Normal

from pyrovae.errors import PyrovaeError


def _diagonal_normal_parts(components) -> tuple[torch.Tensor, torch.Tensor] | None:
    if (
        isinstance(components, Independent)
        and isinstance(components.base_dist, Normal)
        and components.reinterpreted_batch_ndims == 1
        and len(components.batch_shape) == 1
    ):
        return components.base_dist.loc, components.base_dist.scale
    return None


class SharedComponentMixture(TorchDistribution):
    """Mixture of the K components of ``components`` with weights ``softmax(logits)``.

    Args:
        logits: mixing logits, shape ``(K,)`` (zeros for equal weights 1/K).
        components: a distribution with batch shape ``(K,)`` and event shape ``(d,)``.
        batch_shape: the mixture's own batch shape (what a plate expands it to).
    """

    arg_constraints: dict = {}

    def __init__(self, logits, components, batch_shape=(), validate_args=None):
        if len(components.batch_shape) != 1:
            raise PyrovaeError(
                f"components must have batch shape (K,), got {tuple(components.batch_shape)}"
            )
        k = components.batch_shape[0]
        self.components = components
        self.num_components = k
        if logits.shape != (k,):
            raise PyrovaeError(f"logits must have shape ({k},), got {tuple(logits.shape)}")
        self.log_weights = torch.log_softmax(logits, -1)
        self.has_rsample = False
        super().__init__(torch.Size(batch_shape), components.event_shape, validate_args)

    @property
    def support(self):
        return self.components.support

    def expand(self, batch_shape, _instance=None):
        return SharedComponentMixture(
            self.log_weights, self.components, batch_shape, validate_args=False
        )

    def component_log_probs(self, value: torch.Tensor) -> torch.Tensor:
        """log p_k(value) for every component, shape ``(*value_batch, K)``."""
        parts = _diagonal_normal_parts(self.components)
        if parts is not None:
            loc, scale = parts  # (K, d)
            precision = scale.pow(-2)
            quadratic = (
                value.pow(2) @ precision.T
                - 2 * value @ (loc * precision).T
                + (loc.pow(2) * precision).sum(-1)
            )
            d = loc.shape[-1]
            log_det = scale.log().sum(-1)
            return -0.5 * quadratic.clamp_min(0) - log_det - 0.5 * d * math.log(2 * math.pi)
        event_dims = len(self.event_shape)
        expanded = value.unsqueeze(-1 - event_dims)
        expanded = expanded.expand(
            *value.shape[: value.dim() - event_dims], self.num_components, *self.event_shape
        )
        return self.components.log_prob(expanded)

    def log_prob(self, value):
        log_probs = self.component_log_probs(value) + self.log_weights
        result = torch.logsumexp(log_probs, -1)
        return result.expand(torch.broadcast_shapes(result.shape, self.batch_shape))

    def sample(self, sample_shape=()):
        shape = torch.Size(sample_shape) + self.batch_shape
        with torch.no_grad():
            index = torch.distributions.Categorical(logits=self.log_weights).sample(shape)
            draws = self.components.sample(shape)  # (*shape, K, d)
            gather = index.reshape(*shape, 1, *([1] * len(self.event_shape)))
            gather = gather.expand(*shape, 1, *self.event_shape)
            return draws.gather(len(shape), gather).squeeze(len(shape))

    @property
    def mean(self):
        weights = self.log_weights.exp().unsqueeze(-1)
        mean = (weights * self.components.mean).sum(-2)
        return mean.expand(self.batch_shape + self.event_shape)
