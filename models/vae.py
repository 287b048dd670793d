"""The VAE generative model in Pyro syntax.

Generative story, for each data point n in the ``"data"`` plate::

    z_n ~ p(z)                      (the prior module)
    x_n | z_n ~ p(x | decoder(z_n))  (the likelihood module)

Swapping the prior or the likelihood swaps only the distribution object given to
``pyro.sample``; the guide families live in ``guides/``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro
import torch
from torch import nn

from pyrovae.naming import unique_name
from pyrovae.nn import mlp

from .likelihoods import make_likelihood
from .priors import make_prior


class VAE(nn.Module):
    """A VAE model ``p(x, z) = p(z) p(x | z)``; calling it runs the Pyro model on ``x``.

    Args:
        decoder: maps z of shape ``(..., d)`` to likelihood parameters ``(..., D)``.
        prior: module whose ``forward()`` returns p(z) with event shape ``(d,)``.
        likelihood: module mapping decoder outputs to p(x | z) with event shape ``(D,)``.
        data_dim, latent_dim: D and d.
        name: parameter-store name (unique by default, see :mod:`pyrovae.naming`).
    """

    jit_static = True  # fit may replay a recording of the loss: see pyrovae.train.step

    def __init__(
        self,
        decoder: nn.Module,
        prior: nn.Module,
        likelihood: nn.Module,
        data_dim: int,
        latent_dim: int,
        name: str | None = None,
    ):
        super().__init__()
        self.decoder = decoder
        self.prior = prior
        self.likelihood = likelihood
        self.data_dim = data_dim
        self.latent_dim = latent_dim
        self.name = name or unique_name("vae")

    def forward(self, x: torch.Tensor) -> None:
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0], device=x.device):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    model = forward

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z], shape ``(..., D)``."""
        return self.likelihood.mean(self.decoder(z))


def build_vae(
    data_dim: int,
    latent_dim: int,
    hidden: Sequence[int] = (256,),
    prior: str = "standard",
    likelihood: str = "bernoulli",
    activation: str = "relu",
    name: str | None = None,
    *,
    prior_options: dict | None = None,
    likelihood_options: dict | None = None,
    posterior: Callable | None = None,
) -> VAE:
    """A VAE with an MLP decoder ``d -> hidden... -> D`` and registered prior/likelihood.

    ``prior_options`` are the prior's keyword options (e.g. ``{"num_components": 20}`` for
    ``"mog"``), ``likelihood_options`` the likelihood's (``{"min_probability": 1e-5}`` for
    ``"bernoulli"``: the published clamp); ``posterior`` is the guide's posterior map,
    which the ``"vamp"`` prior needs (``posterior=guide.posterior``).
    """
    decoder = mlp(latent_dim, list(reversed(hidden)), data_dim, activation)
    return VAE(
        decoder,
        make_prior(
            prior, latent_dim, data_dim=data_dim, posterior=posterior, **(prior_options or {})
        ),
        make_likelihood(likelihood, data_dim, **(likelihood_options or {})),
        data_dim,
        latent_dim,
        name,
    )
