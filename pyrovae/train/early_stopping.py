"""Early stopping on the validation ELBO: remember the best epoch's parameters, stop after
``patience`` epochs without improvement, and hand the best parameters back."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class EarlyStopping:
    """Tracks the best validation ELBO (nats per data point, higher is better).

    ``update`` is called once per epoch with full KL weight (beta = 1; under warm-up the
    objective is still changing and epochs are not comparable). ``snapshot()`` is called
    only when the value improves, so its cost is paid on improving epochs only.
    With ``patience=None`` it records nothing and never stops.
    """

    patience: int | None = None
    best_value: float = -math.inf
    best_epoch: int | None = None
    bad_epochs: int = 0
    best_state: dict | None = None

    @property
    def enabled(self) -> bool:
        return self.patience is not None

    def update(self, epoch: int, value: float, snapshot: Callable[[], dict]) -> None:
        if not self.enabled:
            return
        if value > self.best_value:
            self.best_value, self.best_epoch, self.bad_epochs = value, epoch, 0
            self.best_state = snapshot()
        else:
            self.bad_epochs += 1

    @property
    def should_stop(self) -> bool:
        return self.enabled and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "best_state": self.best_state,
        }

    def load_state_dict(self, state: dict) -> None:
        self.best_value = state["best_value"]
        self.best_epoch = state["best_epoch"]
        self.bad_epochs = state["bad_epochs"]
        self.best_state = state["best_state"]
