"""Summaries of a guide: its size and the posterior correlation it finds (seed 000)."""

from __future__ import annotations

from collections.abc import Callable

import pyro
import pyro.poutine as poutine
import torch
from torch import nn

from pyrovae.checks import latent_sites
from pyrovae.distributions import draw


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
    guide: Callable, x: torch.Tensor, site: str | None = None, num_samples: int = 2000
) -> dict[str, float]:
    """How correlated the coordinates of q(z | x) are, averaged over the rows of ``x``.

    Returns ``mean_abs_corr`` (mean over data points of the mean |off-diagonal
    correlation| of q(z | x_n)) and ``max_abs_corr`` (the largest one seen). A diagonal
    guide gives exactly 0; a full-covariance guide shows what its extra d(d-1)/2 outputs
    per point bought.
    """
    with pyro.validation_enabled(False):
        trace = poutine.trace(guide).get_trace(x)
    names = latent_sites(trace)
    site = site or names[0]
    if site not in names:
        raise ValueError(f"guide has no latent site {site!r}; it has {names}")
    corr = _correlations(trace.nodes[site]["fn"], num_samples)
    d = corr.shape[-1]
    if d < 2:
        return {"mean_abs_corr": 0.0, "max_abs_corr": 0.0}
    off = ~torch.eye(d, dtype=torch.bool, device=corr.device)
    abs_off = corr[..., off].abs()  # (B, d(d-1))
    return {
        "mean_abs_corr": abs_off.mean().item(),
        "max_abs_corr": abs_off.max().item(),
    }
