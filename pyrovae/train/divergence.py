"""Divergence: a finite loss that explodes. Non-finite losses are caught per step
(:class:`~pyrovae.train.step.SVIStep`); this catches the finite blow-up that follows too
large a learning rate (observed: lr=1e6 gave an ELBO of -3.8e29 and no error).

A step diverges when its loss per data point exceeds the best (lowest) loss per data point
seen in the run by more than ``factor * max(|best|, 1)`` nats. Minibatch noise and KL
warm-up move the loss by a fraction of its size, so the default ``factor = 10`` is far
outside normal training."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class DivergenceMonitor:
    """Watches per-point losses (nats, lower is better); ``factor=None`` turns it off."""

    factor: float | None = 10.0
    best: float = math.inf

    def diverged(self, loss_per_point: float) -> bool:
        """Record a finite loss; True if it is far above the best seen."""
        if self.factor is None or not math.isfinite(loss_per_point):
            return False
        if loss_per_point > self.best + self.factor * max(abs(self.best), 1.0):
            return True
        self.best = min(self.best, loss_per_point)
        return False

    def limit(self) -> float:
        return self.best + (self.factor or 0.0) * max(abs(self.best), 1.0)
