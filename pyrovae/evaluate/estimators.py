"""Per-data-point estimators for any Pyro model/guide pair (nats per data point).

All take ``x`` of shape ``(N, D)`` (as the model sees it: binarized for a Bernoulli
likelihood) and run under ``torch.no_grad()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import pyro
import pyro.poutine as poutine
import torch

from pyrovae.checks import latent_sites, observed_sites, trace_pair
from pyrovae.data import check_data
from pyrovae.denormals import flushed_denormals, logsumexp
from pyrovae.errors import PyrovaeError

from .importance import (
    chunked_draws,
    enumerated_guide_sites,
    enumerated_log_weights,
    log_weights,
    site_log_probs,
    weight_chunks,
)
from .sites import (
    conditioned_log_prob,
    draw_latents,
    guide_site_names,
    has_latent_parents,
    is_discrete,
)


@torch.no_grad()
def elbo(
    model: Callable, guide: Callable, x: torch.Tensor, num_samples: int = 1, batch_size: int = 100
) -> torch.Tensor:
    """ELBO_n = E_q[log p(x_n, z) - log q(z | x_n)], Monte Carlo over ``num_samples`` draws;
    shape ``(N,)``. Discrete guide sites marked for enumeration are summed out exactly:
    ELBO_n = sum_y q(y|x_n) (E_q(z|x_n,y)[log p(x_n, y, z) - log q(z|x_n, y)] - log q(y|x_n))."""
    check_data(x, "x")
    if enumerated_guide_sites(guide, x):
        out = []
        for row in range(0, x.shape[0], batch_size):
            log_w, log_q_y = enumerated_log_weights(
                model, guide, x[row : row + batch_size], num_samples
            )
            per_y = log_w.mean(1) - log_q_y[:, 0]  # (E, b)
            out.append((log_q_y[:, 0].exp() * per_y).sum(0))
        return torch.cat(out)
    return log_weights(model, guide, x, num_samples, batch_size).mean(0)


@torch.no_grad()
def log_likelihood(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    num_samples: int = 5000,
    batch_size: int = 100,
    sample_chunk: int | None = None,
) -> torch.Tensor:
    """Importance-weighted estimate of log p(x_n) (Burda et al. 2015), shape ``(N,)``::

        log p(x_n) ~= log (1/S) sum_s p(x_n, z_s) / q(z_s | x_n),   z_s ~ q(z | x_n)

    a lower bound in expectation (the IWAE bound with k = S) that tightens as S grows;
    S = 5,000 is the protocol behind published VAE log-likelihoods. Discrete guide sites
    marked for enumeration are summed out exactly (S draws of z for each of their values).
    Memory is bounded by ``sample_chunk x batch_size`` draws; ``sample_chunk=None`` picks
    it for the device (100 on the CPU, 1,000 on CUDA, halved on running out of GPU memory:
    :func:`~pyrovae.evaluate.importance.chunked_draws`). On the CPU, subnormal floats are
    flushed to zero meanwhile (:mod:`pyrovae.denormals`).
    """
    check_data(x, "x")
    with flushed_denormals(x.device):
        enumerated = bool(enumerated_guide_sites(guide, x))
        return rows_log_likelihood(
            model, guide, x, num_samples, batch_size, sample_chunk, enumerated
        )


def rows_log_likelihood(
    model, guide, x, num_samples, batch_size, sample_chunk, enumerated: bool
) -> torch.Tensor:
    """:func:`log_likelihood` of the rows of ``x`` without its checks, ``enumerated``
    saying whether the guide has enumerated sites (:func:`enumerated_guide_sites`): rows
    evaluated in several calls draw what one call would have drawn when each call holds
    whole batches of ``batch_size`` rows."""
    if enumerated:

        def chunk_logsumexp(rows: torch.Tensor, draws: int) -> torch.Tensor:  # (b,)
            log_w, _ = enumerated_log_weights(model, guide, rows, draws)
            return logsumexp(log_w.flatten(0, 1), 0)

        per_rows: dict[int, list[torch.Tensor]] = {}
        for rows, _, chunk in chunked_draws(
            chunk_logsumexp, x, num_samples, batch_size, sample_chunk
        ):
            per_rows.setdefault(rows.start, []).append(chunk)
        out = [torch.logsumexp(torch.stack(c), 0) for c in per_rows.values()]
        return torch.cat(out) - math.log(num_samples)
    # a running logsumexp over the draws of each row: memory is one chunk, not (S, N)
    total = x.new_full((x.shape[0],), -math.inf)
    for rows, _, log_w in weight_chunks(model, guide, x, num_samples, batch_size, sample_chunk):
        total[rows] = torch.logaddexp(total[rows], logsumexp(log_w, 0))
    return total - math.log(num_samples)


@dataclass
class KLDecomposition:
    """ELBO surgery (Hoffman & Johnson 2016), nats per data point, for all latent sites
    jointly (z = every latent site of the pair)::

        avg_kl = (1/N) sum_n KL(q(z|x_n) || p(z)) = mutual_info + marginal_kl

    ``mutual_info`` is I_q(n; z), bounded by ``log_n`` = log N; ``marginal_kl`` is
    KL(q_agg || p) with q_agg(z) = (1/N) sum_n q(z | x_n). ``*_se`` are Monte Carlo
    standard errors. ``sites`` has, per latent site s, ``avg_kl`` = E[log q(z_s | parents,
    x) - log p(z_s | parents)] (these sum to the joint avg_kl) and, where both marginals
    are closed (no latent parents in model or guide), its own ``mutual_info`` and
    ``marginal_kl``; otherwise ``undefined`` says why.
    """

    avg_kl: float
    mutual_info: float
    marginal_kl: float
    log_n: float
    num_points: int
    avg_kl_se: float
    marginal_kl_se: float
    sites: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _single_latent(trace) -> str:
    names = latent_sites(trace)
    if len(names) != 1:
        raise PyrovaeError(
            f"this function needs one latent site; the guide has {names}: pass site= to pick one"
        )
    return names[0]


def guide_posterior(guide: Callable, x: torch.Tensor, site: str | None = None):
    """q(z_site | x_n) for every row of ``x`` as one distribution with batch shape ``(N,)``
    (for a site with latent parents: conditional on one draw of them)."""
    with pyro.validation_enabled(False):
        trace = poutine.trace(guide).get_trace(x)
    names = latent_sites(trace)
    name = site or _single_latent(trace)
    if name not in names:
        raise PyrovaeError(f"the guide has no latent site {name!r}; it has {names}")
    return trace.nodes[name]["fn"]


def _as_values(guide: Callable, x: torch.Tensor, z) -> dict[str, torch.Tensor]:
    if isinstance(z, dict):
        return z
    names = guide_site_names(guide, x)
    if len(names) != 1:
        raise PyrovaeError(f"pass z as a dict {{site: values}}: the guide has sites {names}")
    return {names[0]: z}


@torch.no_grad()
def aggregate_log_density(
    guide: Callable, x: torch.Tensor, z, chunk: int = 256, sites: list[str] | None = None
) -> torch.Tensor:
    """log q_agg(z) = log (1/N) sum_n q(z | x_n), shape ``(M,)``.

    ``z``: M values of the single latent site ``(M, *event)``, or ``{site: (M, *event)}``
    for several sites (the joint density of those sites; ``sites`` restricts the sum, which
    is a marginal only for sites without latent parents).
    """
    values = _as_values(guide, x, z)
    sites = sites or list(values)
    m = next(iter(values.values())).shape[0]
    out = []
    for start in range(0, m, chunk):
        part = {name: v[start : start + chunk] for name, v in values.items()}
        log_q = conditioned_log_prob(guide, x, part, sites)  # (m, N)
        out.append(torch.logsumexp(log_q, dim=1) - math.log(x.shape[0]))
    return torch.cat(out)


@torch.no_grad()
def kl_decomposition(
    model: Callable, guide: Callable, x: torch.Tensor, num_samples: int = 10
) -> KLDecomposition:
    """Split the average KL into I(n; z) and KL(q_agg || p) by Monte Carlo, jointly over
    the latent sites and per site where defined (see :class:`KLDecomposition`).

    Draw S = ``num_samples`` z_ns ~ q(z | x_n) for each of the N rows of ``x``; then
    ``avg_kl`` = mean of log q(z_ns|x_n) - log p(z_ns), and ``marginal_kl`` = mean of
    log q_agg(z_ns) - log p(z_ns), where q_agg is the equal-weight mixture over the N rows.
    Costs N^2 S evaluations of log q: pass a subsample of a large test set.
    """
    check_data(x, "x")
    parts = site_log_probs(model, guide, x, num_samples)
    flat = {n: z.reshape(-1, *z.shape[2:]) for n, z in parts.latents.items()}
    shape = (num_samples, x.shape[0])
    log_agg = aggregate_log_density(guide, x, flat).reshape(shape)
    per_point_kl = parts.log_guide - parts.log_prior
    marginal = log_agg - parts.log_prior
    avg_kl, marginal_kl = per_point_kl.mean().item(), marginal.mean().item()
    count = per_point_kl.numel()
    names = list(parts.latents)
    sites = {}
    for name in names:
        site_kl = parts.guide_sites[name] - parts.prior_sites[name]
        entry = {"avg_kl": site_kl.mean().item()}
        others = [o for o in names if o != name]
        if has_latent_parents(guide, x, name, others) or has_latent_parents(model, x, name, others):
            entry["undefined"] = (
                f"site {name!r} has latent parents in the model or the guide, so its "
                "marginals q(z|x) and p(z) have no closed form; use the joint figures"
            )
        else:
            # one site: its aggregate density is the joint one just computed (N^2 S
            # evaluations of log q, the cost of this function)
            site_agg = (
                log_agg
                if names == [name]
                else aggregate_log_density(guide, x, {name: flat[name]}).reshape(shape)
            )
            site_marginal = (site_agg - parts.prior_sites[name]).mean().item()
            entry.update(marginal_kl=site_marginal, mutual_info=entry["avg_kl"] - site_marginal)
        sites[name] = entry
    return KLDecomposition(
        avg_kl=avg_kl,
        mutual_info=avg_kl - marginal_kl,
        marginal_kl=marginal_kl,
        log_n=math.log(x.shape[0]),
        num_points=x.shape[0],
        avg_kl_se=(per_point_kl.std() / math.sqrt(count)).item(),
        marginal_kl_se=(marginal.std() / math.sqrt(count)).item(),
        sites=sites,
    )


@torch.no_grad()
def posterior_means(guide: Callable, x: torch.Tensor, num_samples: int = 500, chunk: int = 256):
    """E_q[z | x_n]: ``(N, d)`` for a single latent site (exact where the family has a
    mean, else sampled), ``{site: (N, *event)}`` sampled for several sites. Chunked over
    rows, so memory is bounded by ``chunk x num_samples`` draws."""
    names = guide_site_names(guide, x)
    if len(names) == 1:
        q = guide_posterior(guide, x)
        try:
            return q.mean
        except NotImplementedError:
            pass
    means: dict[str, list] = {name: [] for name in names}
    for start in range(0, x.shape[0], chunk):
        draws = draw_latents(guide, x[start : start + chunk], num_samples)
        for name, z in draws.items():
            means[name].append(z.float().mean(0))
    out = {name: torch.cat(parts) for name, parts in means.items()}
    return out[names[0]] if len(names) == 1 else out


@torch.no_grad()
def active_units(guide: Callable, x: torch.Tensor, threshold: float = 0.01) -> dict:
    """Burda et al.'s count: dimension u is active if Var_n(E_q[z_u | x_n]) > threshold.

    Returns ``{"active": count over all continuous sites, "variances": per-dimension list,
    "sites": {site: {"active", "variances"}}}``; a discrete site is listed with
    ``undefined`` (active units are defined for continuous coordinates).
    """
    check_data(x, "x")
    with pyro.validation_enabled(False):
        trace = poutine.trace(guide).get_trace(x[:2])
    names = latent_sites(trace)
    means = posterior_means(guide, x)
    if not isinstance(means, dict):
        means = {names[0]: means}
    sites, total, variances = {}, 0, []
    for name in names:
        if is_discrete(trace, name):
            sites[name] = {"undefined": f"site {name!r} is discrete"}
            continue
        var = means[name].reshape(x.shape[0], -1).var(0)
        active = int((var > threshold).sum())
        sites[name] = {"active": active, "variances": var.tolist()}
        total += active
        variances += var.tolist()
    return {"active": total, "variances": variances, "sites": sites}


@dataclass
class Samples:
    """Decoded samples: latents ``z`` (n, d) for a single latent site, else a dict
    ``{site: (n, *event)}``; ``latents`` always the dict; E[x | z] ``mean`` (n, D); a draw
    ``x`` (n, D)."""

    z: torch.Tensor | dict
    mean: torch.Tensor
    x: torch.Tensor
    latents: dict = field(default_factory=dict)


@torch.no_grad()
def sample(
    model: Callable, guide: Callable, n: int, data: torch.Tensor, source: str = "prior"
) -> Samples:
    """Decode n latents drawn from the prior p(z) or the aggregated posterior q_agg(z).

    ``source="aggregate"`` picks n random rows x_m of ``data`` and draws z ~ q(z | x_m)
    (a draw from q_agg = (1/N) sum_m q(z | x_m)); ``"prior"`` runs the model alone on a
    placeholder batch, so z ~ p(z) (every latent site, in the model's order). ``data``
    fixes the feature count (and, for ``"aggregate"``, the mixture).
    """
    check_data(data, "data")
    if source not in ("prior", "aggregate"):
        raise PyrovaeError(f"unknown source {source!r}; choose 'prior' or 'aggregate'")
    with pyro.validation_enabled(False):
        if source == "aggregate":
            rows = torch.randint(data.shape[0], (n,), device=data.device)
            _, trace = trace_pair(model, guide, data[rows])
        else:
            trace = poutine.trace(model).get_trace(data.new_zeros(n, data.shape[1]))
    (obs,) = observed_sites(trace)
    likelihood = trace.nodes[obs]["fn"]
    latents = {name: trace.nodes[name]["value"] for name in latent_sites(trace)}
    z = next(iter(latents.values())) if len(latents) == 1 else latents
    return Samples(z=z, mean=likelihood.mean, x=likelihood.sample(), latents=latents)


@torch.no_grad()
def reconstruct(model: Callable, guide: Callable, x: torch.Tensor) -> torch.Tensor:
    """E[x | z] with z ~ q(z | x_n) for each row: the decoded reconstruction, ``(N, D)``."""
    with pyro.validation_enabled(False):
        _, trace = trace_pair(model, guide, x)
    (obs,) = observed_sites(trace)
    return trace.nodes[obs]["fn"].mean
