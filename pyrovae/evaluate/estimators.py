"""Per-data-point estimators for any Pyro model/guide pair (nats per data point).

All take ``x`` of shape ``(N, D)`` (as the model sees it: binarized for a Bernoulli
likelihood) and run under ``torch.no_grad()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import pyro
import pyro.poutine as poutine
import torch

from pyrovae.checks import latent_sites, observed_sites, trace_pair
from pyrovae.data import check_data
from pyrovae.distributions import draw

from .importance import log_weights, site_log_probs


@torch.no_grad()
def elbo(
    model: Callable, guide: Callable, x: torch.Tensor, num_samples: int = 1, batch_size: int = 100
) -> torch.Tensor:
    """ELBO_n = E_q[log p(x_n, z) - log q(z | x_n)], Monte Carlo over ``num_samples`` draws;
    shape ``(N,)``."""
    check_data(x, "x")
    return log_weights(model, guide, x, num_samples, batch_size).mean(0)


@torch.no_grad()
def log_likelihood(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    num_samples: int = 5000,
    batch_size: int = 100,
    sample_chunk: int = 100,
) -> torch.Tensor:
    """Importance-weighted estimate of log p(x_n) (Burda et al. 2015), shape ``(N,)``::

        log p(x_n) ~= log (1/S) sum_s p(x_n, z_s) / q(z_s | x_n),   z_s ~ q(z | x_n)

    a lower bound in expectation (the IWAE bound with k = S) that tightens as S grows;
    S = 5,000 is the protocol behind published VAE log-likelihoods.
    """
    check_data(x, "x")
    w = log_weights(model, guide, x, num_samples, batch_size, sample_chunk)
    return torch.logsumexp(w, 0) - math.log(num_samples)


@dataclass
class KLDecomposition:
    """ELBO surgery (Hoffman & Johnson 2016), nats per data point::

        avg_kl = (1/N) sum_n KL(q(z|x_n) || p(z)) = mutual_info + marginal_kl

    ``mutual_info`` is I_q(n; z), bounded by ``log_n`` = log N; ``marginal_kl`` is
    KL(q_agg || p) with q_agg(z) = (1/N) sum_n q(z | x_n). ``*_se`` are Monte Carlo
    standard errors.
    """

    avg_kl: float
    mutual_info: float
    marginal_kl: float
    log_n: float
    num_points: int
    avg_kl_se: float
    marginal_kl_se: float

    def to_dict(self) -> dict:
        return asdict(self)


def _single_latent(trace) -> str:
    names = latent_sites(trace)
    if len(names) != 1:
        raise ValueError(f"this estimator needs exactly one latent site; the guide has {names}")
    return names[0]


def guide_posterior(guide: Callable, x: torch.Tensor):
    """q(z | x_n) for every row of ``x`` as one distribution with batch shape ``(N,)``."""
    with pyro.validation_enabled(False):
        trace = poutine.trace(guide).get_trace(x)
    return trace.nodes[_single_latent(trace)]["fn"]


@torch.no_grad()
def aggregate_log_density(
    guide: Callable, x: torch.Tensor, z: torch.Tensor, chunk: int = 256
) -> torch.Tensor:
    """log q_agg(z) = log (1/N) sum_n q(z | x_n) for z of shape ``(M, d)``; shape ``(M,)``."""
    q = guide_posterior(guide, x)
    n = x.shape[0]
    out = []
    for start in range(0, z.shape[0], chunk):
        zc = z[start : start + chunk]
        values = zc.unsqueeze(1).expand(zc.shape[0], n, *zc.shape[1:])  # (m, N, d)
        out.append(torch.logsumexp(q.log_prob(values), dim=1) - math.log(n))
    return torch.cat(out)


@torch.no_grad()
def kl_decomposition(
    model: Callable, guide: Callable, x: torch.Tensor, num_samples: int = 10
) -> KLDecomposition:
    """Split the average KL into I(n; z) and KL(q_agg || p) by Monte Carlo.

    Draw S = ``num_samples`` z_ns ~ q(z | x_n) for each of the N rows of ``x``; then
    ``avg_kl`` = mean of log q(z_ns|x_n) - log p(z_ns), and ``marginal_kl`` = mean of
    log q_agg(z_ns) - log p(z_ns), where q_agg is the equal-weight mixture over the N rows.
    Costs N^2 S evaluations of log q: pass a subsample of a large test set.
    """
    check_data(x, "x")
    parts = site_log_probs(model, guide, x, num_samples)
    (z,) = parts.latents.values()  # (S, N, d)
    per_point_kl = parts.log_guide - parts.log_prior  # (S, N)
    log_agg = aggregate_log_density(guide, x, z.reshape(-1, *z.shape[2:])).reshape(z.shape[:2])
    marginal = log_agg - parts.log_prior
    avg_kl, marginal_kl = per_point_kl.mean().item(), marginal.mean().item()
    count = per_point_kl.numel()
    return KLDecomposition(
        avg_kl=avg_kl,
        mutual_info=avg_kl - marginal_kl,
        marginal_kl=marginal_kl,
        log_n=math.log(x.shape[0]),
        num_points=x.shape[0],
        avg_kl_se=(per_point_kl.std() / math.sqrt(count)).item(),
        marginal_kl_se=(marginal.std() / math.sqrt(count)).item(),
    )


@torch.no_grad()
def posterior_means(guide: Callable, x: torch.Tensor, num_samples: int = 500) -> torch.Tensor:
    """E_q[z | x_n], shape ``(N, d)``: exact where the family has a mean, else sampled."""
    q = guide_posterior(guide, x)
    try:
        return q.mean
    except NotImplementedError:
        return draw(q, num_samples).mean(0)


@torch.no_grad()
def active_units(guide: Callable, x: torch.Tensor, threshold: float = 0.01) -> dict:
    """Burda et al.'s count: dimension u is active if Var_n(E_q[z_u | x_n]) > threshold.

    Returns ``{"active": count, "variances": per-dimension list}``.
    """
    check_data(x, "x")
    variances = posterior_means(guide, x).var(0)
    return {"active": int((variances > threshold).sum()), "variances": variances.tolist()}


@dataclass
class Samples:
    """Decoded samples: latents ``z`` (n, d), E[x | z] ``mean`` (n, D), a draw ``x`` (n, D)."""

    z: torch.Tensor
    mean: torch.Tensor
    x: torch.Tensor


@torch.no_grad()
def sample(
    model: Callable, guide: Callable, n: int, data: torch.Tensor, source: str = "prior"
) -> Samples:
    """Decode n latents drawn from the prior p(z) or the aggregated posterior q_agg(z).

    ``source="aggregate"`` picks n random rows x_m of ``data`` and draws z ~ q(z | x_m)
    (a draw from q_agg = (1/N) sum_m q(z | x_m)); ``"prior"`` runs the model alone on a
    placeholder batch, so z ~ p(z). ``data`` fixes the feature count (and, for
    ``"aggregate"``, the mixture).
    """
    check_data(data, "data")
    if source not in ("prior", "aggregate"):
        raise ValueError(f"unknown source {source!r}; choose 'prior' or 'aggregate'")
    with pyro.validation_enabled(False):
        if source == "aggregate":
            rows = torch.randint(data.shape[0], (n,), device=data.device)
            _, trace = trace_pair(model, guide, data[rows])
        else:
            trace = poutine.trace(model).get_trace(data.new_zeros(n, data.shape[1]))
    (obs,) = observed_sites(trace)
    likelihood = trace.nodes[obs]["fn"]
    z = trace.nodes[_single_latent(trace)]["value"]
    return Samples(z=z, mean=likelihood.mean, x=likelihood.sample())


@torch.no_grad()
def reconstruct(model: Callable, guide: Callable, x: torch.Tensor) -> torch.Tensor:
    """E[x | z] with z ~ q(z | x_n) for each row: the decoded reconstruction, ``(N, D)``."""
    with pyro.validation_enabled(False):
        _, trace = trace_pair(model, guide, x)
    (obs,) = observed_sites(trace)
    return trace.nodes[obs]["fn"].mean
