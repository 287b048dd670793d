"""The training objective's ELBO as a held-out figure: what ``fit`` reports per epoch."""

from __future__ import annotations

from collections.abc import Callable

import pyro
import torch

from pyrovae.checks import observed_sites, trace_pair
from pyrovae.train.objectives import make_objective


@torch.no_grad()
def estimate_elbo(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    objective: str = "Trace_ELBO",
    batch_size: int = 1000,
    num_particles: int = 1,
    max_plate_nesting: int = 1,
) -> float:
    """Average ELBO over the rows of ``x`` in nats per data point (beta = 1), estimated by
    the training objective ``objective`` with ``num_particles`` draws of z per point.

    Unlike :func:`~pyrovae.evaluate.elbo` (per-point values from importance weights) this
    works for every pair the objective trains, model-side enumeration included
    (``TraceEnum_ELBO`` sums it exactly). A plate that scales itself (built with
    ``subsample=``) is divided out, so the figure is per data point either way."""
    elbo = make_objective(objective, num_particles, max_plate_nesting)
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        chunk = x[start : start + batch_size]
        total -= elbo.loss(model, guide, chunk) / _observed_scale(model, guide, chunk)
    return total / x.shape[0]


def _observed_scale(model: Callable, guide: Callable, x: torch.Tensor) -> float:
    """The scale Pyro applies to the model's first observed site (1 unless a plate
    subsamples itself)."""
    with pyro.validation_enabled(False):
        _, model_trace = trace_pair(model, guide, x)
    name = observed_sites(model_trace)[0]
    return float(model_trace.nodes[name]["scale"])
