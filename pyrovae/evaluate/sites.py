"""Latent sites of any pair, by the model's own names: draws, densities at given values,
and which sites have latent parents.

Every helper runs the guide (or model) inside an outer plate over samples (dim -2), so it
works for pairs with several latent sites as long as their networks broadcast over a
leading sample dimension. Densities at given values come from ``poutine.condition``: the
guide is run on the data with its latent sites fixed, so log q(z_1, ..., z_L | x_n) is
evaluated for ANY hierarchy of sites, not only for a single distribution object.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
import pyro.poutine as poutine
import torch

from pyrovae.checks import latent_sites

from .importance import site_log_prob

SAMPLE_PLATE = "evaluation_samples"


def _trace(fn: Callable, x: torch.Tensor, size: int, condition: dict | None = None):
    plate = pyro.plate(SAMPLE_PLATE, size, dim=-2)
    if condition:
        fn = poutine.condition(fn, data=condition)
    with pyro.validation_enabled(False):
        return poutine.trace(plate(fn)).get_trace(x)


def guide_site_names(guide: Callable, x: torch.Tensor) -> list[str]:
    """The guide's latent site names, in the order it samples them."""
    with pyro.validation_enabled(False):
        return latent_sites(poutine.trace(guide).get_trace(x[:2]))


def is_discrete(trace, name: str) -> bool:
    """True for sites with integer support (Categorical, Bernoulli, ...)."""
    return bool(trace.nodes[name]["fn"].support.is_discrete)


def draw_latents(guide: Callable, x: torch.Tensor, num_samples: int) -> dict[str, torch.Tensor]:
    """``num_samples`` joint draws from q(z | x_n) per row: ``{site: (S, N, *event)}``."""
    trace = _trace(guide, x, num_samples)
    return {name: trace.nodes[name]["value"] for name in latent_sites(trace)}


def conditioned_log_prob(
    fn: Callable, x: torch.Tensor, values: dict[str, torch.Tensor], sites: list[str]
) -> torch.Tensor:
    """sum_{s in sites} log f(values_s | values of its parents, x_n), shape ``(m, N)``.

    ``values`` holds m draws per site, ``(m, *event)``, evaluated at EVERY row of ``x``
    (so ``fn`` = the guide gives log q(z_m | x_n) for all m, n). Sites of ``fn`` not in
    ``values`` are sampled.
    """
    m = next(iter(values.values())).shape[0]
    n = x.shape[0]
    expanded = {name: v.unsqueeze(1).expand(m, n, *v.shape[1:]) for name, v in values.items()}
    trace = _trace(fn, x, m, expanded)
    return sum(site_log_prob(trace, name, (m, n)) for name in sites)


def has_latent_parents(fn: Callable, x: torch.Tensor, site: str, others: list[str]) -> bool:
    """Whether the distribution of ``site`` under ``fn`` changes with the values of the
    other latent sites (two independent draws of them, same value of ``site``)."""
    if not others:
        return False
    rows = x[:4]
    first = draw_latents(fn, rows, 2)
    value = first[site][:1].expand_as(first[site])
    swapped = {name: first[name].flip(0) for name in others}
    log_a = conditioned_site(fn, rows, {site: value, **{o: first[o] for o in others}}, site)
    log_b = conditioned_site(fn, rows, {site: value, **swapped}, site)
    return not torch.allclose(log_a, log_b, rtol=1e-5, atol=1e-6)


def conditioned_site(fn: Callable, x: torch.Tensor, values: dict, site: str) -> torch.Tensor:
    """log f(values[site] | the given values of the other sites), shape ``(S, N)``, where
    every value already has its ``(S, N, *event)`` shape."""
    size = values[site].shape[0]
    trace = _trace(fn, x, size, values)
    return site_log_prob(trace, site, (size, x.shape[0]))
