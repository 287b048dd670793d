"""The training objective's ELBO as a held-out figure: what ``fit`` reports per epoch."""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro.poutine.messenger import Messenger

from pyrovae.errors import PyrovaeError
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
        observed = ObservedScale()
        total -= elbo.loss(observed(model), guide, chunk) / observed.value()
    return total / x.shape[0]


class ObservedScale(Messenger):
    """Records the scale Pyro applies to the model's first observed site while the model
    runs under an objective: 1 unless a plate subsamples itself (then N / B). Read from
    the objective's own run of the model, so it costs no second pass over the data."""

    def __init__(self):
        super().__init__()
        self.scale: float | None = None

    def _postprocess_message(self, msg):
        # after every handler's _process_message: the plates' scaling is applied by now
        if self.scale is None and msg["type"] == "sample" and msg["is_observed"]:
            self.scale = float(msg["scale"])

    def value(self) -> float:
        if self.scale is None:
            raise PyrovaeError("the model has no observed site: nothing to estimate an ELBO of")
        return self.scale
