"""Priors p(z): modules whose ``forward()`` returns a distribution with event shape ``(d,)``.

A prior is an ``nn.Module`` so that its constants live in registered buffers (they follow
``.to(device)``) and learnable priors keep their parameters in the model, where they train
with it. Inside the model's ``"data"`` plate Pyro broadcasts the prior to the batch.
Swapping the prior swaps only the distribution object that ``pyro.sample("z", ...)``
receives:

=============  ==============================================  ============================
name           p(z)                                            support
=============  ==============================================  ============================
``standard``   N(0, I_d)                                       real_vector
``mog``        sum_k pi_k N(m_k, diag(s_k^2)), all learnable   real_vector
``vamp``       (1/K) sum_k q(z given u_k), K learnable u_k      the guide's (any family)
``sphere``     uniform on S^{d-1} (z in R^d, norm 1)            sphere
``dirichlet``  Dirichlet(alpha), fixed or learnable alpha      simplex
=============  ==============================================  ============================

Each class declares ``support``; the registry records it (:mod:`pyrovae.supports`) so a
prior and a guide family that live on different spaces are refused before training.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import AffineAutoregressive
from torch import nn
from torch.nn.functional import softplus

from pyrovae import supports
from pyrovae.distributions import (
    Dirichlet,
    HypersphericalUniform,
    SharedComponentMixture,
    StandardNormal,
)
from pyrovae.errors import PyrovaeError, unknown_name
from pyrovae.options import builder_options, check_options

logger = logging.getLogger(__name__)

# K * d from which a VampPrior says so when scoring z inverts its components' flows: each
# data point's score then costs d passes over K points (digits' d = 10, K = 500 is above)
INVERSION_WARNING_SIZE = 1000

# Sizes and context a builder receives from the model, not from the user.
CONTEXT = ("latent_dim", "data_dim", "posterior")
PRIORS: dict[str, type[nn.Module]] = {}


def register_prior(name: str):
    """Decorator: register a prior class under ``name`` and record its support."""

    def decorator(cls):
        PRIORS[name] = cls
        supports.record("prior", name, cls.support)
        return cls

    return decorator


def _inverse_softplus(value: float) -> float:
    return math.log(math.expm1(value))


@register_prior("standard")
class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I_d)."""

    support = constraints.real_vector

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim))
        # unused by forward (StandardNormal makes its own ones); kept so that checkpoints
        # written before StandardNormal load unchanged
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.Distribution:
        # a Normal(0, 1) whose KL from a Normal guide takes the standard-normal closed form
        return StandardNormal(self.loc).to_event(1)


@register_prior("mog")
class MixtureOfGaussiansPrior(nn.Module):
    """p(z) = sum_k softmax(logits)_k N(m_k, diag(s_k^2)) with K = ``num_components``
    learnable means (initialised N(0, ``init_spread``^2)), scales (``init_scale``, floored
    at ``min_scale``) and mixing logits (initialised equal)."""

    support = constraints.real_vector

    def __init__(
        self,
        latent_dim: int,
        num_components: int = 10,
        init_spread: float = 1.0,
        init_scale: float = 1.0,
        min_scale: float = 1e-3,
    ):
        super().__init__()
        if num_components < 1:
            raise PyrovaeError(f"mog needs num_components >= 1, got {num_components}")
        self.latent_dim = latent_dim
        self.min_scale = min_scale
        self.locs = nn.Parameter(init_spread * torch.randn(num_components, latent_dim))
        raw = _inverse_softplus(init_scale - min_scale)
        self.raw_scales = nn.Parameter(torch.full((num_components, latent_dim), raw))
        self.logits = nn.Parameter(torch.zeros(num_components))

    def forward(self) -> dist.Distribution:
        scales = softplus(self.raw_scales) + self.min_scale
        return SharedComponentMixture(self.logits, dist.Normal(self.locs, scales).to_event(1))


@register_prior("vamp")
class VampPrior(nn.Module):
    """The VampPrior (Tomczak & Welling 2018): p(z) = (1/K) sum_k q(z | u_k).

    The K pseudo-inputs u_k live in data space as ``sigmoid(raw_k)`` (so in [0, 1], the
    range of the images the encoder reads) and are learned with the model; q is **the
    guide's** posterior map, received at construction and called, not owned: the encoder's
    parameters stay registered once, under the guide. The prior's support is therefore the
    guide family's (a VampPrior over a vMF guide is a mixture of vMFs on the sphere).

    Args:
        latent_dim: d (unused: the posterior map fixes it; kept for a uniform signature).
        data_dim: D, the size of a pseudo-input.
        posterior: ``x -> q(z | x)``, batch shape ``(K,)`` for ``K`` inputs (e.g.
            ``guide.posterior``).
        num_pseudo_inputs: K (500 in the published protocol).
        init_mean, init_std: pseudo-inputs start at ``sigmoid(N(logit(init_mean),
            init_std^2))``; or pass ``init`` (K, D) values in (0, 1), e.g. training images.
    """

    support = supports.SAME_AS_GUIDE

    def __init__(
        self,
        latent_dim: int,
        data_dim: int,
        posterior: Callable[[torch.Tensor], dist.Distribution],
        num_pseudo_inputs: int = 500,
        init_mean: float = 0.5,
        init_std: float = 0.1,
        init: torch.Tensor | None = None,
    ):
        super().__init__()
        if posterior is None or not callable(posterior):
            raise PyrovaeError(
                "the VampPrior needs the guide's posterior map: build the guide first and "
                "pass posterior=guide.posterior"
            )
        if num_pseudo_inputs < 1:
            raise PyrovaeError(f"vamp needs num_pseudo_inputs >= 1, got {num_pseudo_inputs}")
        self.latent_dim = latent_dim
        # A plain attribute, not a submodule: the guide owns (and registers) the encoder.
        self.__dict__["posterior"] = posterior
        if init is None:
            logit = math.log(init_mean / (1 - init_mean))
            raw = logit + init_std * torch.randn(num_pseudo_inputs, data_dim)
        else:
            if init.shape != (num_pseudo_inputs, data_dim):
                raise PyrovaeError(
                    f"init must have shape ({num_pseudo_inputs}, {data_dim}), got "
                    f"{tuple(init.shape)}"
                )
            raw = torch.logit(init.detach().float().clamp(0.01, 0.99))
        self.raw_pseudo_inputs = nn.Parameter(raw)
        self._components_checked = False

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """u_k = sigmoid(raw_k), shape ``(K, D)``."""
        return torch.sigmoid(self.raw_pseudo_inputs)

    def forward(self) -> dist.Distribution:
        components = self.posterior(self.pseudo_inputs)
        if not self._components_checked:
            self._components_checked = True
            k, d = components.batch_shape[0], components.event_shape[0]
            if k * d >= INVERSION_WARNING_SIZE and _scored_by_inversion(components):
                logger.warning(
                    "the VampPrior scores each z under all %d pseudo-input posteriors, and "
                    "these are autoregressive flows in the 'iaf' direction: each score "
                    "inverts them, d sequential passes over batch x %d points kept for the "
                    "backward pass (at d = 40, batch 100 that passed 24 GB). Build the flow "
                    "guide with direction='maf' (CLI: --guide-flow-direction maf), which scores "
                    "any z in one pass",
                    k,
                    k,
                )
        logits = self.raw_pseudo_inputs.new_zeros(components.batch_shape[0])
        return SharedComponentMixture(logits, components)


def _scored_by_inversion(components: dist.Distribution) -> bool:
    """Whether log density of a point the components did not draw runs an autoregressive
    transform's inverse (d sequential passes): a flow in the IAF direction."""
    return isinstance(components, dist.TransformedDistribution) and any(
        isinstance(t, AffineAutoregressive) for t in components.transforms
    )


@register_prior("sphere")
class HypersphericalUniformPrior(nn.Module):
    """p(z) = uniform on S^{d-1}: z has d coordinates and unit norm (Davidson et al. 2018).
    Pairs with the ``vmf`` and ``power-spherical`` guide families."""

    support = constraints.sphere

    def __init__(self, latent_dim: int):
        super().__init__()
        if latent_dim < 2:
            raise PyrovaeError(f"the sphere prior needs latent_dim >= 2, got {latent_dim}")
        self.latent_dim = latent_dim
        self.register_buffer("anchor", torch.zeros(()), persistent=False)

    def forward(self) -> dist.Distribution:
        return HypersphericalUniform(
            self.latent_dim, dtype=self.anchor.dtype, device=self.anchor.device
        )


@register_prior("dirichlet")
class DirichletPrior(nn.Module):
    """p(z) = Dirichlet(alpha) on the simplex {z_i >= 0, sum_i z_i = 1} in R^d. alpha starts
    at ``concentration`` in every coordinate (< 1: sparse mixtures of d prototypes); with
    ``learnable=True`` it is a model parameter (kept above ``min_concentration``)."""

    support = constraints.simplex

    def __init__(
        self,
        latent_dim: int,
        concentration: float = 1.0,
        learnable: bool = False,
        min_concentration: float = 1e-2,
    ):
        super().__init__()
        if latent_dim < 2:
            raise PyrovaeError(f"the Dirichlet prior needs latent_dim >= 2, got {latent_dim}")
        if not concentration > min_concentration:
            raise PyrovaeError(
                f"dirichlet concentration must be > {min_concentration}, got {concentration}"
            )
        self.latent_dim = latent_dim
        self.min_concentration = min_concentration
        raw = torch.full((latent_dim,), _inverse_softplus(concentration - min_concentration))
        if learnable:
            self.raw_concentration = nn.Parameter(raw)
        else:
            self.register_buffer("raw_concentration", raw)

    def forward(self) -> dist.Distribution:
        return Dirichlet(softplus(self.raw_concentration) + self.min_concentration)


def prior_options(name: str):
    """The user-settable options of prior ``name`` (see :mod:`pyrovae.options`)."""
    return builder_options(PRIORS[name], skip=CONTEXT)


def make_prior(
    name: str,
    latent_dim: int,
    *,
    data_dim: int | None = None,
    posterior: Callable | None = None,
    **options,
) -> nn.Module:
    """Build a registered prior by name; ``options`` are its keyword options, and the
    context (``data_dim``, ``posterior``) reaches only the priors that take it."""
    if name not in PRIORS:
        raise unknown_name("prior", name, PRIORS)
    cls = PRIORS[name]
    check_options(f"prior {name!r}", cls, options, skip=CONTEXT)
    context = {"data_dim": data_dim, "posterior": posterior}
    wanted = set(inspect.signature(cls.__init__).parameters)
    return cls(latent_dim, **{k: v for k, v in context.items() if k in wanted}, **options)
