"""Summaries of a guide: its size and the posterior correlation it finds; and the paired
difference of two per-image figures, which every comparison of pairs reports."""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import pyro.poutine as poutine
import torch
from torch import nn

from pyrovae.checks import latent_sites
from pyrovae.distributions import draw
from pyrovae.errors import PyrovaeError


def paired_difference(values: torch.Tensor, baseline: torch.Tensor) -> tuple[float, float]:
    """(mean of values - baseline over the same items, its standard error sd / sqrt(n)):
    e.g. two pairs' test log p(x) image by image, nats per image. The standard error is
    NaN for fewer than two items; n times both gives the summed difference and its se."""
    diff = (values - baseline).double()
    n = diff.numel()
    se = (diff.std() / math.sqrt(n)).item() if n > 1 else float("nan")
    return diff.mean().item(), se


def count_parameters(module: nn.Module) -> int:
    """Number of trainable scalars in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _correlations(q, num_samples: int) -> torch.Tensor:
    """Correlation matrices of q(z | x_n), shape ``(B, d, d)``: exact for Gaussians with a
    ``covariance_matrix``, identity for a diagonal Normal, else from ``num_samples`` draws."""
    if hasattr(q, "covariance_matrix"):
        cov = q.covariance_matrix
    elif isinstance(q, torch.distributions.Independent) and isinstance(
        q.base_dist, torch.distributions.Normal
    ):
        d = q.event_shape[-1]
        return torch.eye(d, device=q.mean.device).expand(*q.batch_shape, d, d)
    else:
        z = draw(q, num_samples)  # (S, B, d)
        centred = z - z.mean(0)
        cov = torch.einsum("sbi,sbj->bij", centred, centred) / (num_samples - 1)
    std = cov.diagonal(dim1=-2, dim2=-1).sqrt()
    return cov / (std.unsqueeze(-1) * std.unsqueeze(-2))


@torch.no_grad()
def posterior_correlation(
    guide: Callable,
    x: torch.Tensor,
    site: str | None = None,
    num_samples: int = 2000,
    chunk: int = 64,
) -> dict:
    """How correlated the coordinates of q(z | x) are, averaged over the rows of ``x``.

    Per latent site: ``mean_abs_corr`` (mean over data points of the mean absolute
    off-diagonal correlation of q(z_s | x_n)) and ``max_abs_corr`` (the largest one seen);
    a diagonal guide gives exactly 0. For a site with latent parents the correlation is of q(z_s |
    parents, x) at one draw of the parents. Returns the figures of ``site`` (or of the
    only latent site) at the top level and every site's under ``"sites"``; chunked over
    ``chunk`` rows so at most ``chunk x num_samples`` draws are held.
    """
    with pyro.validation_enabled(False):
        names = latent_sites(poutine.trace(guide).get_trace(x[:2]))
    if site is not None and site not in names:
        raise PyrovaeError(f"guide has no latent site {site!r}; it has {names}")
    sums = {name: [0.0, 0.0, 0] for name in names}  # sum of means, max, rows
    for start in range(0, x.shape[0], chunk):
        with pyro.validation_enabled(False):
            trace = poutine.trace(guide).get_trace(x[start : start + chunk])
        for name in names:
            q = trace.nodes[name]["fn"]
            if q.support.is_discrete or not q.event_shape:
                continue
            corr = _correlations(q, num_samples)
            d = corr.shape[-1]
            if d < 2:
                continue
            off = ~torch.eye(d, dtype=torch.bool, device=corr.device)
            abs_off = corr[..., off].abs()  # (B, d(d-1))
            sums[name][0] += abs_off.mean(-1).sum().item()
            sums[name][1] = max(sums[name][1], abs_off.max().item())
            sums[name][2] += abs_off.shape[0]
    per_site = {
        name: {
            "mean_abs_corr": total / rows if rows else 0.0,
            "max_abs_corr": largest,
        }
        for name, (total, largest, rows) in sums.items()
    }
    chosen = site or names[0]
    return {**per_site[chosen], "sites": per_site}


def correlation_summary(result: dict) -> dict:
    """The flat ``mean_abs_corr`` / ``max_abs_corr`` of a :func:`posterior_correlation`
    result (averaged over sites with coordinates), for one table row."""
    sites = [v for v in result["sites"].values()]
    return {
        "mean_abs_corr": sum(v["mean_abs_corr"] for v in sites) / max(len(sites), 1),
        "max_abs_corr": max((v["max_abs_corr"] for v in sites), default=0.0),
    }
