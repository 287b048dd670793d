"""Guide families: heads that turn encoder features into q(z | x).

Every head maps features of shape ``(B, F)`` to a distribution with batch shape ``(B,)``
and event shape ``(d,)``; the guide passes it to ``pyro.sample("z", ...)`` unchanged, so
swapping the family never touches the model. Each head reports
``outputs_per_datapoint``, the number of distribution parameters it emits per data point:

===================  ==========================================  =================
family               q(z | x)                                    outputs per point
===================  ==========================================  =================
``diagonal``         N(mu, diag(sigma^2))                        2d
``full``             N(mu, L L^T), L lower-triangular, L_ii > 0  d(d+3)/2
``lowrank``          N(mu, W W^T + diag(D)), W of rank r         d(r+2)
``mixture``          sum_k pi_k N(mu_k, diag(sigma_k^2))         K(2d+1)
``flow``             T autoregressive flows on N(mu, diag)       2d(1+T)
``vmf``              von Mises-Fisher(mu, kappa) on S^{d-1}      d+1
``power-spherical``  PowerSpherical(mu, kappa) on S^{d-1}        d+1
``dirichlet``        Dirichlet(alpha) on the simplex             d
===================  ==========================================  =================

Each head declares ``support`` (``real_vector``, ``sphere`` or ``simplex``); registering a
family records it in :mod:`pyrovae.supports`, so a guide is never paired with a prior on
another space.

Positive quantities use ``softplus(...) + min_scale`` on a soft-clamped input, so every
head is valid (positive definite, finite) for ANY encoder output. The Gaussian families
also take a ceiling ``max_scale`` (inf, none, by default; :mod:`pyrovae.bounds`): the
published VampPrior protocol keeps every scale in [0.05, e], a log-variance in [-6, 2].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn

from guides.flows import conditional_affine_flow
from pyrovae import supports
from pyrovae.bounds import MAX_RAW, check_scale_range, positive, soft_clamp
from pyrovae.distributions import (
    Dirichlet,
    LowRankMultivariateNormal,
    MixtureOfDiagNormals,
    MultivariateNormal,
    PowerSpherical,
    VonMisesFisher,
)
from pyrovae.distributions.sphere import unit_directions
from pyrovae.errors import PyrovaeError, unknown_name
from pyrovae.options import builder_options, check_options

SIZES = ("in_features", "latent_dim")
FAMILIES: dict[str, type] = {}


def register_family(name: str):
    """Decorator registering a head class under ``name`` and recording its support (then
    every registry-parametrised test and ``--guide name`` pick it up)."""

    def decorator(cls):
        FAMILIES[name] = cls
        supports.record("guide family", name, cls.support)
        return cls

    return decorator


INITIAL_FACTOR_SHRINK = 0.1  # low-rank factors start 10x smaller than a default layer's


class GuideHead(nn.Module):
    """Base class: a linear layer from features to raw outputs (made by :meth:`_build`) and
    one hook, :meth:`make_dist`, that turns them into q(z | x). ``outputs_per_datapoint``
    counts the distribution parameters emitted per data point."""

    outputs_per_datapoint: int
    support = constraints.real_vector

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        min_scale: float = 1e-3,
        max_scale: float = math.inf,
    ):
        super().__init__()
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise PyrovaeError(f"latent_dim must be an integer >= 1, got {latent_dim!r}")
        check_scale_range(min_scale, max_scale)
        self.in_features = in_features
        self.latent_dim = latent_dim
        self.min_scale = min_scale
        self.max_scale = max_scale

    def scale(self, raw: torch.Tensor) -> torch.Tensor:
        """Scales in ``[min_scale, max_scale]`` (and below ~15 + min_scale) from raw outputs."""
        return positive(raw, self.min_scale, max_value=self.max_scale)

    def extra_repr(self) -> str:
        # printed (so a checkpoint's pair summary tells bounded from unbounded heads) only
        # where set: heads without a ceiling print as they always did
        return f"max_scale={self.max_scale:g}" if self.max_scale < math.inf else ""

    def _build(self, num_outputs: int) -> None:
        self.outputs_per_datapoint = num_outputs
        self.linear = nn.Linear(self.in_features, num_outputs)

    def forward(self, features: torch.Tensor) -> dist.Distribution:
        return self.make_dist(self.linear(features), features)

    def make_dist(self, raw: torch.Tensor, features: torch.Tensor) -> dist.Distribution:
        raise NotImplementedError


@register_family("diagonal")
class DiagonalNormalHead(GuideHead):
    """q(z | x) = N(mu(x), diag(sigma(x)^2)) as ``Normal(loc, scale).to_event(1)``."""

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        min_scale: float = 1e-3,
        max_scale: float = math.inf,
    ):
        super().__init__(in_features, latent_dim, min_scale, max_scale)
        self._build(2 * latent_dim)

    def make_dist(self, raw, features):
        loc, raw_scale = raw.split(self.latent_dim, dim=-1)
        return dist.Normal(loc, self.scale(raw_scale)).to_event(1)


@register_family("full")
class FullCovarianceHead(GuideHead):
    """q(z | x) = N(mu(x), L(x) L(x)^T) as ``MultivariateNormal(loc, scale_tril=L)``,
    pyrovae's, which scores its own draws from their noise: exact for any L, where the
    triangular solve of torch's ``log_prob`` is not (:mod:`pyrovae.distributions.
    multivariate_normal`).

    L = U diag(s): U unit lower-triangular with off-diagonal entries soft-clamped to
    ``(-offdiag_bound, offdiag_bound)``, and ``s = softplus(.) + min_scale > 0``; so
    L_ij = U_ij s_j is a valid Cholesky factor for any encoder output. The off-diagonal
    outputs are scale-free (a raw L_ij of the size of a small posterior scale makes a
    nearly degenerate q; U_ij does not), and their layer starts at zero, so the head
    starts as the diagonal family it contains (the fix Pyro's maintainers found for a raw
    ``scale_tril`` head, pyro-ppl issue #2924). d(d+3)/2 outputs per data point.
    """

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        min_scale: float = 1e-3,
        offdiag_bound: float = 10.0,
        max_scale: float = math.inf,
    ):
        super().__init__(in_features, latent_dim, min_scale, max_scale)
        self.offdiag_bound = offdiag_bound
        d = latent_dim
        rows, cols = torch.tril_indices(d, d, offset=-1)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)
        self._build(d * (d + 3) // 2)
        with torch.no_grad():  # start diagonal: U = I
            self.linear.weight[2 * d :].zero_()
            self.linear.bias[2 * d :].zero_()

    def make_dist(self, raw, features):
        d = self.latent_dim
        loc, raw_diag, raw_off = raw.split([d, d, d * (d - 1) // 2], dim=-1)
        scale = self.scale(raw_diag)
        unit = torch.diag_embed(torch.ones_like(scale))
        unit[..., self._rows, self._cols] = soft_clamp(raw_off, self.offdiag_bound)
        return MultivariateNormal(loc, scale_tril=unit * scale.unsqueeze(-2))


@register_family("lowrank")
class LowRankHead(GuideHead):
    """q(z | x) = N(mu, W W^T + diag(D)) as pyrovae's ``LowRankMultivariateNormal`` (its
    ``log_prob`` in float64, where float32's is tenths of a nat off at these bounds) with W
    of shape ``(d, rank)``; d(rank+2) outputs per data point.

    ``sqrt(D) >= min_scale = 0.05`` (the published protocol's log-variance floor of -6) and
    ``|W_ij| < factor_bound``: torch factorises the capacitance ``I + W^T D^-1 W`` by
    Cholesky, which fails in float32 once ``|W|^2 / D`` nears 1/eps.
    """

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        rank: int = 2,
        min_scale: float = 0.05,
        factor_bound: float = 5.0,
        max_scale: float = math.inf,
    ):
        super().__init__(in_features, latent_dim, min_scale, max_scale)
        if rank < 1:
            raise PyrovaeError(f"lowrank needs rank >= 1, got {rank}")
        self.rank = rank
        self.factor_bound = factor_bound
        self._build(latent_dim * (rank + 2))
        with torch.no_grad():  # start near the diagonal family (W = 0 is a saddle: not 0)
            self.linear.weight[2 * latent_dim :].mul_(INITIAL_FACTOR_SHRINK)
            self.linear.bias[2 * latent_dim :].mul_(INITIAL_FACTOR_SHRINK)

    def make_dist(self, raw, features):
        d, r = self.latent_dim, self.rank
        loc, raw_diag, raw_factor = raw.split([d, d, d * r], dim=-1)
        cov_factor = soft_clamp(raw_factor, self.factor_bound).unflatten(-1, (d, r))
        cov_diag = self.scale(raw_diag) ** 2
        return LowRankMultivariateNormal(loc, cov_factor, cov_diag)


@register_family("mixture")
class MixtureHead(GuideHead):
    """q(z | x) = sum_k pi_k(x) N(mu_k(x), diag(sigma_k(x)^2)) with pathwise gradients
    (``MixtureOfDiagNormals``, Jankowiak & Karaletsos 2019); K(2d+1) outputs per point."""

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        num_components: int = 3,
        min_scale: float = 1e-3,
        max_scale: float = math.inf,
    ):
        super().__init__(in_features, latent_dim, min_scale, max_scale)
        if num_components < 1:
            raise PyrovaeError(f"mixture needs num_components >= 1, got {num_components}")
        self.num_components = num_components
        self._build(num_components * (2 * latent_dim + 1))

    def make_dist(self, raw, features):
        d, k = self.latent_dim, self.num_components
        locs, raw_scales, logits = raw.split([k * d, k * d, k], dim=-1)
        return MixtureOfDiagNormals(
            locs.unflatten(-1, (k, d)),
            self.scale(raw_scales).unflatten(-1, (k, d)),
            soft_clamp(logits, MAX_RAW),
        )


@register_family("flow")
class FlowHead(GuideHead):
    """q(z | x): a diagonal Normal base N(mu(x), diag(sigma(x)^2)) and ``num_flows`` affine
    autoregressive transforms T_t conditioned on the encoder features, each with a MADE
    of ``flow_hidden`` ReLU layers (:mod:`guides.flows`). Each flow emits 2d numbers per
    data point: 2d(1+T) in all.

    ``direction`` says which way the transforms run:

    - ``"iaf"`` (default; Kingma et al. 2016): z = T_T(...T_1(eps)). A draw and its own
      log density take one pass of each network; the density of any other z takes d.
    - ``"maf"``: z = T_T^{-1}(...T_1^{-1}(eps)). A draw takes d passes of each network on
      the batch; the density of ANY z takes one. Use it with the VampPrior, which scores
      every z under all K pseudo-input posteriors: at d = 40, K = 500, batch 100 an
      ``"iaf"`` step keeps 40 passes over 50,000 points for its backward pass.
    """

    DIRECTIONS = ("iaf", "maf")

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        num_flows: int = 2,
        flow_hidden: Sequence[int] = (64,),
        direction: str = "iaf",
        min_scale: float = 1e-3,
        max_scale: float = math.inf,
    ):
        super().__init__(in_features, latent_dim, min_scale, max_scale)
        if latent_dim < 2:
            raise PyrovaeError(
                "an autoregressive flow needs latent_dim >= 2; use 'diagonal' for d=1"
            )
        if num_flows < 1:
            raise PyrovaeError(
                f"flow needs num_flows >= 1, got {num_flows} (with none it is the 'diagonal' "
                "family: use that)"
            )
        if direction not in self.DIRECTIONS:
            raise PyrovaeError(
                f"flow direction must be one of {self.DIRECTIONS}, got {direction!r}: 'iaf' "
                "draws fast, 'maf' scores any z fast (use it with the vamp prior)"
            )
        self.num_flows = num_flows
        self.direction = direction
        self.flows = nn.ModuleList(
            conditional_affine_flow(latent_dim, in_features, flow_hidden) for _ in range(num_flows)
        )
        self._build(2 * latent_dim)
        self.outputs_per_datapoint = 2 * latent_dim * (1 + num_flows)

    def make_dist(self, raw, features):
        loc, raw_scale = raw.split(self.latent_dim, dim=-1)
        base = dist.Normal(loc, self.scale(raw_scale)).to_event(1)
        transforms = [flow.condition(features) for flow in self.flows]
        if self.direction == "maf":
            transforms = [transform.inv for transform in transforms]
        return dist.TransformedDistribution(base, transforms)


class _SphericalHead(GuideHead):
    """q(z | x) on S^{d-1}: mean direction ``mu = raw[:d] / |raw[:d]|`` and concentration
    ``kappa = softplus(soft_clamp(raw[d], max_concentration)) + min_concentration``; d+1
    outputs per point. ``min_concentration = 1`` follows the hyperspherical VAE, where it
    keeps posteriors from collapsing onto the uniform prior."""

    support = constraints.sphere
    distribution: type

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        min_concentration: float = 1.0,
        max_concentration: float = 1e4,
    ):
        super().__init__(in_features, latent_dim)
        if latent_dim < 2:
            raise PyrovaeError(f"a spherical guide needs latent_dim >= 2, got {latent_dim}")
        self.min_concentration = min_concentration
        self.max_concentration = max_concentration
        self._build(latent_dim + 1)

    def make_dist(self, raw, features):
        direction, raw_kappa = raw.split([self.latent_dim, 1], dim=-1)
        kappa = positive(raw_kappa.squeeze(-1), self.min_concentration, self.max_concentration)
        return self.distribution(unit_directions(direction), kappa)


@register_family("vmf")
class VonMisesFisherHead(_SphericalHead):
    """q(z | x) = vMF(mu(x), kappa(x)), reparameterized with unbiased gradients."""

    distribution = VonMisesFisher


@register_family("power-spherical")
class PowerSphericalHead(_SphericalHead):
    """q(z | x) = PowerSpherical(mu(x), kappa(x)) (De Cao & Aziz 2020): no rejection, no
    Bessel functions."""

    distribution = PowerSpherical


@register_family("dirichlet")
class DirichletHead(GuideHead):
    """q(z | x) = Dirichlet(alpha(x)) on the simplex, alpha_i = softplus(soft_clamp(raw_i,
    max_concentration)) + min_concentration; reparameterized (torch's implicit Gamma
    gradients); d outputs per point.

    ``min_concentration = 0.3``: a float32 Dirichlet coordinate underflows to 1.2e-38 with
    probability about (1e-38)^alpha, 1 % at alpha = 0.05, and a prior density with
    alpha_p != 1 (a VampPrior of Dirichlets) then has gradient (alpha_p - 1)/z = inf. At 0.3
    that probability is ~4e-12 per coordinate (an ad-hoc check: VampPrior + Dirichlet on digits
    diverged in 3/3 seeds at 0.05, 0/3 at 0.2 and above)."""

    support = constraints.simplex

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        min_concentration: float = 0.3,
        max_concentration: float = 1e3,
    ):
        super().__init__(in_features, latent_dim)
        if latent_dim < 2:
            raise PyrovaeError(f"a Dirichlet guide needs latent_dim >= 2, got {latent_dim}")
        self.min_concentration = min_concentration
        self.max_concentration = max_concentration
        self._build(latent_dim)

    def make_dist(self, raw, features):
        return Dirichlet(positive(raw, self.min_concentration, self.max_concentration))


def family_options(name: str):
    """The user-settable options of family ``name`` (see :mod:`pyrovae.options`)."""
    return builder_options(FAMILIES[name], skip=SIZES)


def make_head(name: str, in_features: int, latent_dim: int, **options) -> GuideHead:
    """Build a registered guide head by name with its keyword ``options``."""
    if name not in FAMILIES:
        raise unknown_name("guide family", name, FAMILIES)
    check_options(f"guide family {name!r}", FAMILIES[name], options, skip=SIZES)
    return FAMILIES[name](in_features, latent_dim, **options)
