"""Divergence: a finite loss that explodes. Non-finite losses are caught per step
(:class:`~pyrovae.train.step.SVIStep`); this catches the finite blow-up that follows too
large a learning rate (observed: lr=1e6 gave an ELBO of -3.8e29 and no error).

A step diverges when its loss per data point L exceeds the best (lowest) loss seen in the
run by more than ``factor`` times the loss's own scale::

    L > best + factor * max(|best|, first - best, 1)

where ``first`` is the run's first loss: the scale is the loss's size or the progress
training has made, whichever is larger. The progress term matters for densities of
continuous data, whose loss can approach or cross 0 while minibatches still differ by
tens of nats (under the size-only rule, ``python examples/custom_model.py`` stopped with
a best of 1.3 nats/point and a minibatch loss of 14.9). Minibatch noise and KL warm-up
move the loss by a fraction of that scale, so the default ``factor = 10`` is far outside
normal training."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class DivergenceMonitor:
    """Watches per-point losses (nats, lower is better); ``factor=None`` turns it off."""

    factor: float | None = 10.0
    best: float = math.inf
    first: float | None = None

    def scale(self) -> float:
        progress = 0.0 if self.first is None else self.first - self.best
        return max(abs(self.best), progress, 1.0)

    def limit(self) -> float:
        return self.best + (self.factor or 0.0) * self.scale()

    def diverged(self, loss_per_point: float) -> bool:
        """Record a finite loss; True if it is far above the best seen."""
        if self.factor is None or not math.isfinite(loss_per_point):
            return False
        if self.first is None:
            self.first = loss_per_point
        if loss_per_point > self.limit():
            return True
        self.best = min(self.best, loss_per_point)
        return False

    def state_dict(self) -> dict:
        return {"best": self.best, "first": self.first}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.first = state["best"], state["first"]
