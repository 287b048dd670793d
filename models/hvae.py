"""A hierarchical VAE with two stochastic layers (Sønderby et al. 2016; the VampPrior
paper's "HVAE", Tomczak & Welling 2018) in Pyro syntax.

Generative story, for each data point n in the ``"data"`` plate::

    z2_n ~ p(z2)                           (any registered prior: standard, vamp, mog, ...)
    z1_n | z2_n ~ N(mu(z2_n), diag sigma(z2_n)^2)
    x_n | z1_n, z2_n ~ p(x | decoder([z1_n, z2_n]))

The guide (``guides.hierarchical``) is q(z2 | x) q(z1 | x, z2), so a VampPrior on the top
layer mixes q(z2 | u_k) over pseudo-inputs, as in the published HVAE + VampPrior row.
Every network broadcasts over leading sample dimensions (the estimators need that).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.bounds import check_scale_range, positive
from pyrovae.errors import PyrovaeError
from pyrovae.naming import unique_name
from pyrovae.nn import TwoBranchNet, mlp

from .likelihoods import make_likelihood
from .priors import make_prior


class ConditionalNormal(nn.Module):
    """p(z1 | z2) = N(mu(z2), diag(sigma(z2)^2)), sigma = softplus(.) + ``min_scale``, kept
    below ``max_scale`` where that is finite (smoothly: :mod:`pyrovae.bounds`)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int],
        activation: str,
        min_scale: float = 1e-3,
        max_scale: float = math.inf,
    ):
        super().__init__()
        check_scale_range(min_scale, max_scale, "min_scale of p(z1 | z2)")
        self.out_dim = out_dim
        self.min_scale = min_scale
        self.max_scale = max_scale
        self.net = mlp(in_dim, hidden, 2 * out_dim, activation)

    def forward(self, z2: torch.Tensor) -> dist.Distribution:
        loc, raw = self.net(z2).split(self.out_dim, dim=-1)
        scale = positive(raw, self.min_scale, bound=None, max_value=self.max_scale)
        return dist.Normal(loc, scale).to_event(1)

    def extra_repr(self) -> str:
        return f"max_scale={self.max_scale:g}" if self.max_scale < math.inf else ""


class HierarchicalVAE(nn.Module):
    """p(x, z1, z2) = p(z2) p(z1 | z2) p(x | z1, z2); calling it runs the Pyro model.

    Args:
        decoder: maps ``[z1, z2]`` of shape ``(..., d1 + d2)`` to likelihood parameters.
        prior: module whose ``forward()`` returns p(z2), event shape ``(d2,)``.
        conditional: module mapping z2 to p(z1 | z2), event shape ``(d1,)``.
        likelihood: module mapping decoder outputs to p(x | z1, z2).
        data_dim: D.
        name: parameter-store name (unique by default).
    """

    jit_static = True  # fit may replay a recording of the loss: see pyrovae.train.step

    def __init__(self, decoder, prior, conditional, likelihood, data_dim: int, name=None):
        super().__init__()
        self.decoder = decoder
        self.prior = prior
        self.conditional = conditional
        self.likelihood = likelihood
        self.data_dim = data_dim
        self.name = name or unique_name("hvae")

    def forward(self, x: torch.Tensor) -> None:
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0], device=x.device):
            z2 = pyro.sample("z2", self.prior())
            z1 = pyro.sample("z1", self.conditional(z2))
            pyro.sample("x", self.likelihood(self.decoder(torch.cat([z1, z2], -1))), obs=x)

    model = forward


def build_hvae(
    data_dim: int,
    latent_dim: int,
    hidden: Sequence[int] = (256,),
    prior: str = "standard",
    likelihood: str = "bernoulli",
    activation: str = "relu",
    name: str | None = None,
    *,
    bottom_dim: int = 0,
    prior_options: dict | None = None,
    likelihood_options: dict | None = None,
    posterior: Callable | None = None,
    conditional_min_scale: float = 1e-3,
    conditional_max_scale: float = math.inf,
    decoder_branches: bool = False,
) -> HierarchicalVAE:
    """A two-layer VAE: z2 of size ``latent_dim`` (the registered ``prior``), z1 of size
    ``bottom_dim`` (``latent_dim`` when 0), MLPs of widths ``hidden`` for p(z1 | z2) and
    the decoder. ``posterior`` is the guide's top posterior map q(z2 | x) (for "vamp").
    ``conditional_min_scale`` and ``conditional_max_scale`` bound p(z1 | z2)'s scales (the
    published HVAE: 0.05 and e, a log-variance in [-6, 2]); ``likelihood_options`` are the
    likelihood's keyword options (``{"min_probability": 1e-5}``: the published clamp).
    The decoder reads ``[z1, z2]`` through its first hidden layer, or with
    ``decoder_branches`` through a branch each of that width, joined by the rest (the
    published layout: 40 -> 300 twice, then 600 -> 300 -> D)."""
    d2 = latent_dim
    d1 = bottom_dim or latent_dim
    widths = list(reversed(hidden))
    if decoder_branches:
        if not widths:
            raise PyrovaeError("decoder_branches needs at least one hidden layer (hidden=())")
        decoder = TwoBranchNet(d1, d2, widths[0], widths[1:], data_dim, activation)
    else:
        decoder = mlp(d1 + d2, widths, data_dim, activation)
    return HierarchicalVAE(
        decoder,
        make_prior(prior, d2, data_dim=data_dim, posterior=posterior, **(prior_options or {})),
        ConditionalNormal(d2, d1, widths, activation, conditional_min_scale, conditional_max_scale),
        make_likelihood(likelihood, data_dim, **(likelihood_options or {})),
        data_dim,
        name,
    )
