"""Likelihoods p(x | z): modules that turn decoder outputs into a distribution over x.

Each takes the decoder's output of shape ``(..., D)`` (one number per feature) and returns
a distribution with event shape ``(D,)``, so ``log_prob`` is nats per data point.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from pyrovae.distributions.bernoulli import BernoulliLogits
from pyrovae.errors import PyrovaeError, unknown_name


class BernoulliLikelihood(nn.Module):
    """x_i | z ~ Bernoulli(logits = f(z)_i), x_i in {0, 1}: binarized images.

    With ``min_probability = p > 0`` every mean is clamped to ``[p, 1 - p]`` (its logit to
    ``+/- log((1 - p) / p)``), as the published VampPrior code's ``log_Bernoulli`` does with
    p = 1e-5: then no pixel costs more than -log p = 11.5 nats, whatever the decoder
    outputs, and a clamped pixel passes no gradient (the published clamp's behaviour).
    """

    support_hint = "binary values {0, 1}: use binarize='dynamic' or 'static'"

    def __init__(self, data_dim: int, min_probability: float = 0.0):
        super().__init__()
        if not 0.0 <= min_probability < 0.5:
            raise PyrovaeError(
                f"min_probability must be in [0, 0.5), got {min_probability} (0: no clamp; "
                "the published VampPrior code clamps at 1e-5)"
            )
        self.data_dim = data_dim
        self.min_probability = min_probability
        self.max_logit = (
            math.log1p(-min_probability) - math.log(min_probability)
            if min_probability > 0
            else math.inf
        )

    def logits(self, outputs: torch.Tensor) -> torch.Tensor:
        """The decoder's outputs as logits, clamped where ``min_probability`` is set."""
        if self.max_logit < math.inf:
            return outputs.clamp(-self.max_logit, self.max_logit)
        return outputs

    def forward(self, outputs: torch.Tensor) -> dist.Distribution:
        return BernoulliLogits(logits=self.logits(outputs)).to_event(1)

    def mean(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(outputs))

    def extra_repr(self) -> str:
        return f"min_probability={self.min_probability:g}" if self.min_probability > 0 else ""


class ContinuousBernoulliLikelihood(nn.Module):
    """x_i | z ~ ContinuousBernoulli(logits = f(z)_i), x_i in [0, 1] (Loaiza-Ganem &
    Cunningham 2019): gray levels with a properly normalised density."""

    support_hint = "values in [0, 1]"

    def __init__(self, data_dim: int):
        super().__init__()
        self.data_dim = data_dim

    def forward(self, logits: torch.Tensor) -> dist.Distribution:
        return dist.ContinuousBernoulli(logits=logits).to_event(1)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return dist.ContinuousBernoulli(logits=logits).mean


class GaussianLikelihood(nn.Module):
    """x_i | z ~ N(f(z)_i, sigma_i^2) with a learned per-feature sigma_i >= ``min_scale``."""

    support_hint = "real values"

    def __init__(self, data_dim: int, init_scale: float = 0.1, min_scale: float = 1e-3):
        super().__init__()
        self.data_dim = data_dim
        self.min_scale = min_scale
        raw = torch.log(torch.expm1(torch.tensor(init_scale - min_scale)))
        self.raw_scale = nn.Parameter(raw.expand(data_dim).clone())

    def forward(self, loc: torch.Tensor) -> dist.Distribution:
        scale = softplus(self.raw_scale) + self.min_scale
        return dist.Normal(loc, scale).to_event(1)

    def mean(self, loc: torch.Tensor) -> torch.Tensor:
        return loc


LIKELIHOODS: dict[str, Callable[..., nn.Module]] = {
    "bernoulli": BernoulliLikelihood,
    "continuous-bernoulli": ContinuousBernoulliLikelihood,
    "gaussian": GaussianLikelihood,
}


def make_likelihood(name: str, data_dim: int, **kwargs) -> nn.Module:
    """Build a registered likelihood by name."""
    if name not in LIKELIHOODS:
        raise unknown_name("likelihood", name, LIKELIHOODS)
    return LIKELIHOODS[name](data_dim, **kwargs)
