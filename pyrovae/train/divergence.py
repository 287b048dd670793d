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
normal training.

The same rule guards the other side: a loss far BELOW the best::

    L < best - factor * max(|best|, first - best, 1),

is no progress either. Training does not improve that fast; an ELBO that leaps up is one
whose log density is computed wrongly, with the optimizer exploiting the error (observed:
a full-covariance guide's log q(z | x) by float32's triangular solve, which reached a loss
of -2.3e32 before its gradient overflowed; see :mod:`pyrovae.distributions.
multivariate_normal`)."""

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

    def lower_limit(self) -> float:
        return self.best - (self.factor or 0.0) * self.scale()

    def verdict(self, loss_per_point: float) -> str | None:
        """Record a finite loss: ``"exploded"`` if it is far above the best seen,
        ``"plunged"`` if far below it, None otherwise (then it counts towards the best)."""
        if self.factor is None or not math.isfinite(loss_per_point):
            return None
        if self.first is None:
            self.first = loss_per_point
        if loss_per_point > self.limit():
            return "exploded"
        if math.isfinite(self.best) and loss_per_point < self.lower_limit():
            return "plunged"
        self.best = min(self.best, loss_per_point)
        return None

    def diverged(self, loss_per_point: float) -> bool:
        """Record a finite loss; True if it is far above or far below the best seen."""
        return self.verdict(loss_per_point) is not None

    def state_dict(self) -> dict:
        return {"best": self.best, "first": self.first}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.first = state["best"], state["first"]
