"""The Power Spherical distribution (De Cao & Aziz 2020): a rejection-free alternative to
the von Mises-Fisher with the same support and symmetry and no Bessel functions.

For unit vectors z in R^d, mean direction mu and concentration kappa >= 0::

    p(z) = N(kappa, d) (1 + mu^T z)^kappa,
    alpha = (d - 1)/2 + kappa,  beta = (d - 1)/2,
    log N = -[(alpha + beta) log 2 + beta log pi + lgamma(alpha) - lgamma(alpha + beta)].

Sampling: t = 2B - 1 with B ~ Beta(alpha, beta) (drawn as a 2-part Dirichlet with
torch's implicit gradient, :func:`~pyrovae.distributions.dirichlet.dirichlet_draw`, which
also returns 1 - B exactly), v uniform on S^{d-2}, z = H(mu) (t, sqrt(1 - t^2) v).
Closed forms: E[mu^T z] = (alpha - beta) / (alpha + beta); entropy
H = -[log N + kappa (log 2 + digamma(alpha) - digamma(alpha + beta))].
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import constraints

from .dirichlet import dirichlet_draw
from .sphere import RotationSymmetric, around_e1, reflect_onto, tangent_directions


class PowerSpherical(RotationSymmetric):
    """PowerSpherical(mu, kappa) on S^{d-1}.

    Args:
        loc: mean direction mu, unit vectors of shape ``(*batch, d)``, d >= 2.
        concentration: kappa >= 0, shape broadcastable to ``batch``.
    """

    arg_constraints = {"loc": constraints.sphere, "concentration": constraints.nonnegative}

    def _alpha_beta(self) -> tuple[torch.Tensor, float]:
        beta = (self.dim - 1) / 2
        return self.concentration.double() + beta, beta

    def rsample(self, sample_shape=()):
        shape = torch.Size(sample_shape) + self.batch_shape
        alpha, beta = self._alpha_beta()
        concentrations = torch.stack([alpha, torch.full_like(alpha, beta)], -1)
        b, one_minus_b = dirichlet_draw(concentrations.expand(shape + (2,))).unbind(-1)
        one_minus_t = 2 * one_minus_b  # t = 2B - 1, so 1 - t = 2 (1 - B): exact near t = 1
        del b
        v = tangent_directions(shape, self.dim, self.loc)
        z = around_e1(one_minus_t.to(self.loc.dtype), v)
        return reflect_onto(self.loc.expand(shape + self.event_shape), z)

    def _log_normalizer(self) -> torch.Tensor:
        alpha, beta = self._alpha_beta()
        return -(
            (alpha + beta) * math.log(2)
            + beta * math.log(math.pi)
            + torch.lgamma(alpha)
            - torch.lgamma(alpha + beta)
        )

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        cosine = (self.loc * value).sum(-1)
        log_kernel = self.concentration * torch.log1p(cosine.clamp_min(-1))
        return (log_kernel.double() + self._log_normalizer()).to(value.dtype)

    @property
    def mean(self):
        alpha, beta = self._alpha_beta()
        length = ((alpha - beta) / (alpha + beta)).to(self.loc.dtype)
        return length.unsqueeze(-1) * self.loc

    def entropy(self):
        alpha, beta = self._alpha_beta()
        kappa = self.concentration.double()
        expected_log_kernel = kappa * (
            math.log(2) + torch.digamma(alpha) - torch.digamma(alpha + beta)
        )
        return (-(self._log_normalizer() + expected_log_kernel)).to(self.loc.dtype)
