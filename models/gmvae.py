"""The Gaussian-mixture VAE (Dilokthanakul et al. 2016, in the simplified form of Shu's
GMVAE) in Pyro syntax: a discrete cluster y that the ELBO sums out exactly.

Generative story, for each data point n in the ``"data"`` plate::

    y_n ~ Categorical(pi)                      (pi = softmax of learnable logits)
    z_n | y_n ~ N(m_{y_n}, diag(s_{y_n}^2))    (K learnable means and scales)
    x_n | z_n ~ p(x | decoder(z_n))

The guide (``guides.gmvae``) is q(y | x) q(z | x, y) with y marked for parallel
enumeration; train with ``TraceEnum_ELBO``. Unsupervised clustering accuracy compares
argmax_y q(y | x) with the labels (:func:`pyrovae.evaluate.clustering_accuracy`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from pyrovae.errors import PyrovaeError
from pyrovae.naming import unique_name
from pyrovae.nn import mlp

from .likelihoods import make_likelihood


class GaussianMixtureVAE(nn.Module):
    """p(x, y, z) = p(y) p(z | y) p(x | z); calling it runs the Pyro model.

    Args:
        decoder: maps z ``(..., d)`` to likelihood parameters ``(..., D)``.
        likelihood: module mapping decoder outputs to p(x | z).
        data_dim, latent_dim: D and d.
        num_clusters: K.
        spread: the cluster means start at N(0, spread^2).
        learn_weights: learn the mixing logits (else pi = 1/K).
        name: parameter-store name (unique by default).
    """

    jit_static = True  # fit may replay a recording of the loss: see pyrovae.train.step

    def __init__(
        self,
        decoder: nn.Module,
        likelihood: nn.Module,
        data_dim: int,
        latent_dim: int,
        num_clusters: int = 10,
        spread: float = 1.0,
        learn_weights: bool = False,
        name: str | None = None,
    ):
        super().__init__()
        if num_clusters < 2:
            raise PyrovaeError(f"a GMVAE needs num_clusters >= 2, got {num_clusters}")
        self.decoder = decoder
        self.likelihood = likelihood
        self.data_dim = data_dim
        self.latent_dim = latent_dim
        self.num_clusters = num_clusters
        self.cluster_locs = nn.Parameter(spread * torch.randn(num_clusters, latent_dim))
        self.cluster_raw_scales = nn.Parameter(torch.zeros(num_clusters, latent_dim))
        logits = torch.zeros(num_clusters)
        if learn_weights:
            self.cluster_logits = nn.Parameter(logits)
        else:
            self.register_buffer("cluster_logits", logits)
        self.name = name or unique_name("gmvae")

    def forward(self, x: torch.Tensor) -> None:
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0], device=x.device):
            y = pyro.sample("y", dist.Categorical(logits=self.cluster_logits))
            scales = softplus(self.cluster_raw_scales) + 1e-3
            z = pyro.sample("z", dist.Normal(self.cluster_locs[y], scales[y]).to_event(1))
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    model = forward


def build_gmvae(
    data_dim: int,
    latent_dim: int,
    hidden: Sequence[int] = (256,),
    prior: str = "standard",
    likelihood: str = "bernoulli",
    activation: str = "relu",
    name: str | None = None,
    *,
    num_clusters: int = 10,
    learn_weights: bool = False,
    prior_options: dict | None = None,
    posterior: Callable | None = None,
) -> GaussianMixtureVAE:
    """A GMVAE with an MLP decoder; its prior is the mixture itself, so ``prior`` must be
    "standard" (the registry's priors do not apply)."""
    if prior != "standard" or prior_options:
        raise PyrovaeError(
            "the GMVAE's prior is its own mixture p(y) p(z | y); leave --prior at 'standard' "
            "and set the mixture with --model-gmvae-num-clusters"
        )
    decoder = mlp(latent_dim, list(reversed(hidden)), data_dim, activation)
    return GaussianMixtureVAE(
        decoder,
        make_likelihood(likelihood, data_dim),
        data_dim,
        latent_dim,
        num_clusters=num_clusters,
        learn_weights=learn_weights,
        name=name,
    )
