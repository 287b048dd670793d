"""Closed-form KL divergences that torch and Pyro lack.

Registered with ``torch.distributions.kl.register_kl`` so ``kl_divergence`` (and hence
``TraceMeanField_ELBO``) uses them:

- KL(Normal(m, s) || StandardNormal): 1/2 (s^2 + m^2 - 1) - log s per coordinate
- KL(MultivariateNormal(mu, L L^T) || Normal(m, s).to_event(1))
- KL(LowRankMultivariateNormal(mu, W W^T + diag(D)) || Normal(m, s).to_event(1))

- KL(VonMisesFisher || HypersphericalUniform), KL(PowerSpherical || HypersphericalUniform)

The Gaussian ones use, for q = N(mu, Sigma) and p = N(m, S) with S = diag(s^2)::

    KL(q || p) = 1/2 [ tr(S^-1 Sigma) + (m - mu)^T S^-1 (m - mu) - d + log|S| - log|Sigma| ]

in nats, shape = the broadcast batch shape.
"""

from __future__ import annotations

import torch
from torch.distributions import (
    Independent,
    LowRankMultivariateNormal,
    MultivariateNormal,
    Normal,
    kl_divergence,
    register_kl,
)

from .hyperspherical_uniform import HypersphericalUniform
from .power_spherical import PowerSpherical
from .sphere import log_sphere_area
from .standard_normal import StandardNormal
from .von_mises_fisher import VonMisesFisher


def _diag_normal_parts(p: Independent) -> tuple[torch.Tensor, torch.Tensor]:
    """(loc, scale) of ``Normal(loc, scale).to_event(1)``, else NotImplementedError so that
    callers such as TraceMeanField_ELBO fall back to Monte Carlo."""
    if not (isinstance(p.base_dist, Normal) and p.reinterpreted_batch_ndims == 1):
        raise NotImplementedError
    return p.base_dist.loc, p.base_dist.scale


def _kl_gaussian_diag(
    loc_q: torch.Tensor,
    trace_term: torch.Tensor,
    logdet_q: torch.Tensor,
    loc_p: torch.Tensor,
    scale_p: torch.Tensor,
) -> torch.Tensor:
    """KL from its pieces: ``trace_term = tr(S^-1 Sigma)``, ``logdet_q = log|Sigma|``."""
    var_p = scale_p.pow(2)
    mahalanobis = ((loc_p - loc_q).pow(2) / var_p).sum(-1)
    d = loc_q.shape[-1]
    logdet_p = 2 * scale_p.log().sum(-1)
    return 0.5 * (trace_term + mahalanobis - d + logdet_p - logdet_q)


@register_kl(Normal, StandardNormal)
def kl_normal_standard_normal(q: Normal, p: StandardNormal) -> torch.Tensor:
    """KL(N(m, s^2) || N(0, 1)) = 1/2 (s^2 + m^2 - 1) - log s per coordinate (nats), the
    batch shape broadcast with ``p``'s."""
    kl = 0.5 * (q.scale.pow(2) + q.loc.pow(2) - 1) - q.scale.log()
    return kl.expand(torch.broadcast_shapes(kl.shape, p.batch_shape))


@register_kl(MultivariateNormal, Independent)
def kl_mvn_diag_normal(q: MultivariateNormal, p: Independent) -> torch.Tensor:
    loc_p, scale_p = _diag_normal_parts(p)
    scale_p = scale_p.expand_as(q.loc)
    L = q.scale_tril
    trace_term = (L.pow(2) / scale_p.pow(2).unsqueeze(-1)).sum((-2, -1))
    logdet_q = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return _kl_gaussian_diag(q.loc, trace_term, logdet_q, loc_p, scale_p)


@register_kl(LowRankMultivariateNormal, Independent)
def kl_lowrank_diag_normal(q: LowRankMultivariateNormal, p: Independent) -> torch.Tensor:
    loc_p, scale_p = _diag_normal_parts(p)
    scale_p = scale_p.expand_as(q.loc)
    W, D = q.cov_factor, q.cov_diag
    var_p = scale_p.pow(2)
    trace_term = ((W.pow(2).sum(-1) + D) / var_p).sum(-1)
    # Matrix determinant lemma: |W W^T + D| = |I_r + W^T D^-1 W| |D|.
    capacitance = W.mT @ (W / D.unsqueeze(-1))
    capacitance = capacitance + torch.eye(W.shape[-1], dtype=W.dtype, device=W.device)
    logdet_q = torch.linalg.slogdet(capacitance).logabsdet + D.log().sum(-1)
    return _kl_gaussian_diag(q.loc, trace_term, logdet_q, loc_p, scale_p)


def kl_path(q, p) -> str:
    """``"analytic"`` if ``kl_divergence(q, p)`` has a closed form registered, else
    ``"monte-carlo"`` (what TraceMeanField_ELBO falls back to)."""
    try:
        kl_divergence(q, p)
    except NotImplementedError:
        return "monte-carlo"
    return "analytic"


def draw(q, num_samples: int) -> torch.Tensor:
    """``num_samples`` reparameterized draws, shape ``(num_samples, *batch, *event)``.

    Goes through ``expand`` rather than ``rsample(sample_shape)``, which Pyro's
    ``MixtureOfDiagNormals`` (1.9) gets wrong for batched parameters.
    """
    return q.expand(torch.Size([num_samples]) + q.batch_shape).rsample()


# ----------------------------------------------------------- hyperspherical posteriors


@register_kl(VonMisesFisher, HypersphericalUniform)
def kl_vmf_uniform(q: VonMisesFisher, p: HypersphericalUniform) -> torch.Tensor:
    """KL(vMF(mu, kappa) || U(S^{d-1})) = log area(S^{d-1}) - H[vMF] (Davidson et al. 2018)."""
    return log_sphere_area(q.dim) - q.entropy()


@register_kl(PowerSpherical, HypersphericalUniform)
def kl_power_spherical_uniform(q: PowerSpherical, p: HypersphericalUniform) -> torch.Tensor:
    """KL(PowerSpherical(mu, kappa) || U(S^{d-1})) = log area(S^{d-1}) - H[PS]."""
    return log_sphere_area(q.dim) - q.entropy()
