"""Per-data-point importance log weights from Pyro traces of any model/guide pair.

For data points x_n (the rows of a batch) and S draws z_ns ~ q(z | x_n), the log
importance ratio is::

    log w_ns = log p(x_n, z_ns) - log q(z_ns | x_n)

computed by running the guide, then the model replayed against it, inside an outer plate
of size S (dim -2), so every site's ``log_prob`` has shape ``(S, B)``. Unlike Pyro's
``vectorized_importance_weights`` (which sums over the whole batch), nothing is summed
over data points. Sites outside the ``"data"`` plate are not supported here: they would
couple the data points.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyro
import pyro.poutine as poutine
import torch

from pyrovae.checks import latent_sites, masked_log_prob, sample_sites
from pyrovae.errors import PyrovaeError

PARTICLE_PLATE = "importance_samples"
logger = logging.getLogger(__name__)

# Draws per chunk when none is given, per device type. Measured with
# benchmarks/iwae_eval.py (S = 5,000, 100 images per chunk, gated 784-300-300, z = 40): on an
# H100, 1,000 draws ran 3,946 images/s against 856 for 100 (Pyro's per-chunk Python work
# dominates small chunks there); on the CPU the arithmetic per draw dominates, and 100 keeps
# memory small. An automatic chunk that runs out of GPU memory is halved and retried.
DEFAULT_SAMPLE_CHUNK = {"cpu": 100, "cuda": 1000}


def default_sample_chunk(device: torch.device) -> int:
    """Draws per chunk for ``sample_chunk=None`` on ``device`` (:data:`DEFAULT_SAMPLE_CHUNK`;
    100 for device types not listed)."""
    return DEFAULT_SAMPLE_CHUNK.get(torch.device(device).type, 100)


def check_sample_chunk(sample_chunk: int | None) -> None:
    """Refuse a ``sample_chunk`` that is neither None nor a positive integer."""
    if sample_chunk is None:
        return
    if isinstance(sample_chunk, bool) or not isinstance(sample_chunk, int) or sample_chunk < 1:
        raise PyrovaeError(
            f"sample_chunk must be a positive integer or None (automatic), got {sample_chunk!r}"
        )


@dataclass
class SiteLogProbs:
    """Log densities of one chunk of S draws for B data points, each of shape ``(S, B)``.

    ``latents`` maps each latent site name to its draws, shape ``(S, B, *event)``;
    ``prior_sites`` / ``guide_sites`` map each latent site to its own log p(z_s | parents)
    and log q(z_s | parents, x), shape ``(S, B)``.
    """

    log_joint: torch.Tensor  # log p(x, z)
    log_prior: torch.Tensor  # log p(z): the model's latent sites only
    log_guide: torch.Tensor  # log q(z | x)
    latents: dict[str, torch.Tensor]
    prior_sites: dict[str, torch.Tensor]
    guide_sites: dict[str, torch.Tensor]

    @property
    def log_weights(self) -> torch.Tensor:
        return self.log_joint - self.log_guide

    @property
    def log_likelihood(self) -> torch.Tensor:
        """log p(x | z) = log p(x, z) - log p(z)."""
        return self.log_joint - self.log_prior


def site_log_prob(trace, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The masked log density of site ``name``, required to have shape ``shape``."""
    log_prob = masked_log_prob(trace.nodes[name])
    if tuple(log_prob.shape) != tuple(shape):
        raise PyrovaeError(
            f"site {name!r} has log_prob shape {tuple(log_prob.shape)}, expected {tuple(shape)} "
            "(samples, data points); per-data-point evaluation needs every sample site "
            "inside the data plate and networks that broadcast over leading sample dimensions"
        )
    return log_prob


def site_log_probs(
    model: Callable, guide: Callable, x: torch.Tensor, num_samples: int
) -> SiteLogProbs:
    """One vectorized pass: S = ``num_samples`` draws for every row of ``x``."""
    particles = pyro.plate(PARTICLE_PLATE, num_samples, dim=-2)
    with pyro.validation_enabled(False):
        guide_trace = poutine.trace(particles(guide)).get_trace(x)
        model_trace = poutine.trace(poutine.replay(particles(model), trace=guide_trace)).get_trace(
            x
        )
    shape = (num_samples, x.shape[0])
    guide_latents = latent_sites(guide_trace)
    model_sites = sample_sites(model_trace)
    model_latents = latent_sites(model_trace)
    missing = set(model_latents) - set(guide_latents)
    if missing:
        raise PyrovaeError(f"model latent sites {sorted(missing)} have no guide site")
    # each site's density once: a VampPrior's is a mixture over hundreds of components,
    # as costly per draw as the decoder under a full-covariance guide
    model_log_probs = {n: site_log_prob(model_trace, n, shape) for n in model_sites}
    prior_sites = {n: model_log_probs[n] for n in model_latents}
    guide_sites = {n: site_log_prob(guide_trace, n, shape) for n in guide_latents}
    log_prior = sum(prior_sites.values(), x.new_zeros(shape))
    return SiteLogProbs(
        log_joint=sum(model_log_probs.values(), x.new_zeros(shape)),
        log_prior=log_prior,
        log_guide=sum(guide_sites.values(), x.new_zeros(shape)),
        latents={n: guide_trace.nodes[n]["value"] for n in guide_latents},
        prior_sites=prior_sites,
        guide_sites=guide_sites,
    )


def chunked_draws(
    compute: Callable[[torch.Tensor, int], torch.Tensor],
    x: torch.Tensor,
    num_samples: int,
    batch_size: int = 100,
    sample_chunk: int | None = None,
) -> Iterator[tuple[slice, int, torch.Tensor]]:
    """``(rows, first_draw, compute(x[rows], draws))`` for chunks of at most
    ``sample_chunk`` draws x ``batch_size`` rows, every draw of every row once. Memory is
    one chunk at a time, so S = 5,000 fits. ``sample_chunk=None`` takes
    :func:`default_sample_chunk` for ``x``'s device and halves it whenever a chunk runs out
    of GPU memory; a chunk size given explicitly that runs out raises a PyrovaeError."""
    check_sample_chunk(sample_chunk)
    automatic = sample_chunk is None
    limit = default_sample_chunk(x.device) if automatic else sample_chunk
    for row in range(0, x.shape[0], batch_size):
        rows = slice(row, row + batch_size)
        begin = 0
        while begin < num_samples:
            size = min(limit, num_samples - begin)
            try:
                result = compute(x[rows], size)
            except torch.cuda.OutOfMemoryError as error:
                if not automatic or size == 1:
                    raise PyrovaeError(
                        f"out of GPU memory evaluating {size} draws x {x[rows].shape[0]} data "
                        "points at once; pass a smaller sample_chunk or batch_size (or "
                        "sample_chunk=None, which halves the chunk until it fits)"
                    ) from error
                limit = max(1, size // 2)
                torch.cuda.empty_cache()
                logger.info("out of GPU memory at %d draws per chunk; now %d", size, limit)
                continue
            yield rows, begin, result
            begin += size


def weight_chunks(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    num_samples: int,
    batch_size: int = 100,
    sample_chunk: int | None = None,
) -> Iterator[tuple[slice, int, torch.Tensor]]:
    """``(rows, first_draw, log_w)`` for the chunks of :func:`chunked_draws`: ``log_w``
    (draws, rows) of log p(x_n, z) - log q(z | x_n), nats."""

    def compute(rows: torch.Tensor, draws: int) -> torch.Tensor:
        return site_log_probs(model, guide, rows, draws).log_weights

    yield from chunked_draws(compute, x, num_samples, batch_size, sample_chunk)


@torch.no_grad()
def log_weights(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    num_samples: int,
    batch_size: int = 100,
    sample_chunk: int | None = None,
) -> torch.Tensor:
    """log w_ns = log p(x_n, z_ns) - log q(z_ns | x_n), shape ``(S, N)``, in nats,
    computed in the chunks of :func:`weight_chunks`."""
    out = x.new_empty(num_samples, x.shape[0])
    for rows, begin, chunk in weight_chunks(model, guide, x, num_samples, batch_size, sample_chunk):
        out[begin : begin + chunk.shape[0], rows] = chunk
    return out


def enumerated_guide_sites(guide: Callable, x: torch.Tensor) -> list[str]:
    """Guide sites marked for parallel enumeration (summed out exactly by the estimators)."""
    with pyro.validation_enabled(False):
        trace = poutine.trace(guide).get_trace(x[:2])
    return [
        name
        for name in latent_sites(trace)
        if trace.nodes[name]["infer"].get("enumerate") == "parallel"
        and trace.nodes[name]["fn"].support.is_discrete
    ]


def enumerated_log_weights(
    model: Callable, guide: Callable, x: torch.Tensor, num_samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """For a guide with enumerated discrete sites y and continuous sites z:

    ``log_w`` (E, S, B) = log p(x_n, y_e, z_es) - log q(z_es | x_n, y_e), every one of the E
    joint values y_e of the enumerated sites, S draws z_es ~ q(z | x_n, y_e);
    ``log_q_y`` (E, 1, B) = log q(y_e | x_n).

    Then p(x_n) = sum_e mean_s exp(log_w) exactly in y, and the ELBO is
    sum_e q(y_e | x_n) [mean_s log_w - log q(y_e | x_n)].
    """
    particles = pyro.plate(PARTICLE_PLATE, num_samples, dim=-2)
    with pyro.validation_enabled(False):
        enumerated = poutine.enum(particles(guide), first_available_dim=-3)
        guide_trace = poutine.trace(enumerated).get_trace(x)
        model_trace = poutine.trace(poutine.replay(particles(model), trace=guide_trace)).get_trace(
            x
        )
    discrete = [
        n
        for n in latent_sites(guide_trace)
        if guide_trace.nodes[n]["infer"].get("_enumerate_dim") is not None
    ]
    log_w, log_q_y = 0.0, 0.0
    for name in sample_sites(model_trace):
        site = model_trace.nodes[name]
        log_w = log_w + masked_log_prob(site)
    for name in latent_sites(guide_trace):
        site = guide_trace.nodes[name]
        if name in discrete:
            log_q_y = log_q_y + masked_log_prob(site)
        else:
            log_w = log_w - masked_log_prob(site)
    shape = (num_samples, x.shape[0])
    lead = torch.broadcast_shapes(log_w.shape, log_q_y.shape)[:-2]
    log_w = log_w.expand(*lead, *shape).reshape(-1, *shape)
    # q(y | x) is the same for every draw of z: keep one copy of the sample axis
    log_q_y = torch.as_tensor(log_q_y).expand(*lead, *shape).reshape(-1, *shape)[:, :1]
    return log_w, log_q_y
