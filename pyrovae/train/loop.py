"""``fit``: stochastic variational inference for any Pyro model/guide pair.

Each step minimises an objective (:mod:`pyrovae.train.objectives`) on a minibatch of B of
the N training points. Two scalings are applied by a handler around BOTH model and guide:

- every sample site inside the data plate is scaled by N/B, so the minibatch loss is an
  unbiased estimate of the full-data negative ELBO. The data plate is the plate over the
  batch's rows around the observed sites (found automatically, or named by
  ``data_plate=``); a plate that subsamples itself (``pyro.plate(name, N, subsample=x)``)
  is already scaled by Pyro and is left alone;
- every latent (non-observed) site is scaled by the KL warm-up weight beta in [0, 1], so
  the objective is ``E_q[log p(x|z)] - beta KL(q(z|x) || p(z))``. ``TraceMeanField_ELBO``
  scales its analytic KL by the GUIDE site's scale, which is why the guide is wrapped too.
  Under ``TraceEnum_ELBO`` sites that share an enumeration with an observed site keep the
  observed site's scale, as Pyro requires (:func:`~pyrovae.train.objectives.warmup_sites`).

Before the first step the objective's loss is computed once with Pyro's validation on
(:func:`~pyrovae.train.objectives.check_objective`): an objective that does not fit the
pair is refused with the reason, not silently biased.

ELBOs are reported in nats per data point (the summed ELBO divided by the number of points).
Optimisation uses a native ``torch.optim.Adam`` over the parameters the pair registers
with ``pyro.module``/``pyro.param`` (cheaper than ``pyro.optim`` and checkpointable as one
``state_dict``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

import pyrovae.distributions  # noqa: F401  (registers the KLs TraceMeanField_ELBO needs)
from pyrovae.checks import check_pair, latent_sites, observed_sites, trace_pair
from pyrovae.data import DataSplits, make_splits
from pyrovae.distributions import kl_path

from .checkpoint import (
    CHECKPOINT_FORMAT,
    _copy_params,
    _load_state,
    _move,
    _rng_state,
    _save_atomic,
    _set_rng_state,
    _state,
    load_checkpoint,
)
from .objectives import check_objective, find_data_plate, make_objective, warmup_sites
from .step import SVIStep

logger = logging.getLogger(__name__)

MAX_SKIPPED_IN_A_ROW = 3  # non-finite steps in a row that stop training


def _snapshot(model, guide, step) -> dict:
    return {"model": _state(model), "guide": _state(guide), "params": _copy_params(step.params)}


def _restore(model, guide, step, snapshot: dict) -> None:
    """Put the pair and the optimised tensors back to ``snapshot`` (optimizer state is not
    touched by skipped steps)."""
    _load_state(model, snapshot["model"])
    _load_state(guide, snapshot["guide"])
    with torch.no_grad():
        for p, saved in zip(step.params, snapshot["params"], strict=True):
            p.copy_(saved)


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
    """Average ELBO over the rows of ``x`` in nats per data point (beta = 1), a Monte Carlo
    estimate with ``num_particles`` draws of z per point. A plate that scales itself (built
    with ``subsample=``) is divided out, so the figure is per data point either way."""
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


def _check_labeled(labeled, splits: DataSplits) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_l, y_l) on the data's device, with the shapes checked."""
    x_l, y_l = labeled
    if x_l.dim() != 2 or x_l.shape[1] != splits.num_features or y_l.shape != (x_l.shape[0],):
        raise ValueError(
            f"labeled must be (x of shape (M, {splits.num_features}), y of shape (M,)); got "
            f"{tuple(x_l.shape)} and {tuple(y_l.shape)}"
        )
    return x_l.to(splits.train.device), y_l.to(splits.train.device).long()


def kl_paths(model: Callable, guide: Callable, x: torch.Tensor) -> str:
    """How ``TraceMeanField_ELBO`` gets each latent site's KL on this pair:
    ``"z=analytic"`` (closed form registered) or ``"z=monte-carlo"``, comma-separated."""
    with pyro.validation_enabled(False):
        guide_trace, model_trace = trace_pair(model, guide, x)
    return ",".join(
        f"{name}={kl_path(guide_trace.nodes[name]['fn'], model_trace.nodes[name]['fn'])}"
        for name in latent_sites(guide_trace)
        if name in model_trace.nodes
    )


@dataclass
class FitConfig:
    """Everything ``fit`` needs besides the pair and the data; serialisable."""

    objective: str = "Trace_ELBO"
    epochs: int = 10
    batch_size: int = 100
    learning_rate: float = 1e-3
    num_particles: int = 1
    warmup_epochs: int = 0
    patience: int | None = None
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    data_plate: str | None = None  # found automatically when None
    max_plate_nesting: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FitConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown FitConfig fields {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**d)

    def validate(self) -> None:
        make_objective(self.objective, self.num_particles)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be finite and > 0, got {self.learning_rate}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} but CUDA is not available; use device='cpu'")

    def beta(self, epoch: int) -> float:
        """KL weight in epoch ``epoch`` (1-based): ``min(1, epoch / warmup_epochs)``."""
        return 1.0 if self.warmup_epochs == 0 else min(1.0, epoch / self.warmup_epochs)


@dataclass
class FitHistory:
    """Per-epoch record of a run. ELBOs in nats per data point (higher is better)."""

    epoch: list[int] = field(default_factory=list)
    beta: list[float] = field(default_factory=list)
    train_objective: list[float] = field(default_factory=list)  # beta-weighted, minibatch mean
    validation_elbo: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    skipped_steps: int = 0  # steps skipped for a non-finite loss or gradient
    kl_path: str = ""
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FitHistory:
        return cls(**d)

    @property
    def seconds_per_epoch(self) -> float:
        return float(np.mean(self.seconds)) if self.seconds else float("nan")


def as_splits(data: DataSplits | torch.Tensor | tuple) -> DataSplits:
    """Accept a :class:`DataSplits`, a training tensor, or (train, validation[, test])."""
    if isinstance(data, DataSplits):
        return data
    if isinstance(data, torch.Tensor):
        return make_splits("data", data, None, None, binarize="none")
    if isinstance(data, tuple | list) and 1 <= len(data) <= 3:
        parts = list(data) + [None] * (3 - len(data))
        return make_splits("data", *parts, binarize="none")
    raise ValueError(
        "data must be DataSplits (load_dataset), a tensor (N, D), or a tuple "
        f"(train, validation[, test]); got {type(data).__name__}"
    )


def fit(
    model: Callable,
    guide: Callable,
    data: DataSplits | torch.Tensor | tuple,
    config: FitConfig | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    labeled: tuple[torch.Tensor, torch.Tensor] | None = None,
    **overrides,
) -> FitHistory:
    """Train ``guide`` and ``model`` by SVI on ``data``'s training split.

    Args:
        model, guide: Pyro callables taking a batch ``x`` of shape ``(B, D)`` whose local
            sites live in a plate over the batch's rows (any name; ``data_plate=`` picks one
            when several qualify). If they are ``nn.Module`` s they are moved to
            ``config.device`` and checkpointed through their ``state_dict``.
        data: :class:`~pyrovae.data.DataSplits`, a tensor, or (train, validation[, test]).
        config: a :class:`FitConfig`; keyword ``overrides`` replace its fields.
        checkpoint: file written (atomically) after every epoch: model, guide, optimizer,
            epoch, RNG state, history.
        resume: a checkpoint to continue from; the run then ends where an uninterrupted
            run with the same config and seed would.
        labeled: ``(x_l, y_l)`` for a semi-supervised pair called as ``model(x, y)``: every
            step adds the labelled ELBO of all of them (their own N_l/B_l = 1 scale; gray
            levels are binarized per step like the training batches), so the loss is
            ``-[ELBO(unlabelled) + ELBO(labelled)]`` as in Kingma et al. (2014).

    Returns:
        a :class:`FitHistory`; with ``patience`` set, the best-validation parameters are
        restored at the end.
    """
    config = FitConfig.from_dict({**(config or FitConfig()).to_dict(), **overrides})
    config.validate()
    splits = as_splits(data).to(config.device)
    _move(model, config.device)
    _move(guide, config.device)
    check_pair(model, guide, splits)

    history = FitHistory(config=config.to_dict())
    start_epoch = 1
    best_value, best_state, bad_epochs = -math.inf, None, 0
    pyro.set_rng_seed(config.seed)
    probe = next(splits.batches("train", config.batch_size))
    data_plate, self_scaled = find_data_plate(model, guide, probe, config.data_plate)
    step = SVIStep(
        model,
        guide,
        config.objective,
        config.learning_rate,
        config.num_particles,
        data_plate,
        config.max_plate_nesting,
    )
    if config.objective == "TraceEnum_ELBO":
        step.scaler.beta_sites = warmup_sites(model, guide, probe, config.max_plate_nesting)
    check_objective(config.objective, step.elbo, step.model, step.guide, probe)
    if labeled is not None:
        labeled = _check_labeled(labeled, splits)
        x_l = splits.present_like_train(labeled[0])
        check_objective("Trace_ELBO", step.labeled_elbo, step.model, step.guide, x_l, labeled[1])
    step._setup(probe)
    history.kl_path = kl_paths(model, guide, probe)

    if resume is not None:
        ckpt = load_checkpoint(resume)
        _load_state(model, ckpt["model"])
        _load_state(guide, ckpt["guide"])
        with torch.no_grad():
            for p, saved in zip(step.params, ckpt["params"], strict=True):
                p.copy_(saved)
        step.optimizer.load_state_dict(ckpt["optimizer"])
        history = FitHistory.from_dict(ckpt["history"])
        history.config = config.to_dict()
        start_epoch = ckpt["epoch"] + 1
        best_value, bad_epochs = ckpt["best_value"], ckpt["bad_epochs"]
        best_state = ckpt["best_state"]
        _set_rng_state(ckpt["rng"])
        logger.info("resumed from %s at epoch %d", resume, ckpt["epoch"])

    n_train = splits.train.shape[0]
    has_validation = splits.validation is not None
    bar = tqdm(
        range(start_epoch, config.epochs + 1), disable=not config.progress, desc="fit", unit="epoch"
    )
    with pyro.validation_enabled(False):  # check_pair validated the inputs already
        for epoch in bar:
            beta = config.beta(epoch)
            started = time.perf_counter()
            total, count, batch_index = 0.0, 0, 0
            epoch_start = _snapshot(model, guide, step)
            for x in splits.batches("train", config.batch_size, shuffle=True):
                data_scale = 1.0 if self_scaled else n_train / x.shape[0]
                extra = None
                if labeled is not None:
                    extra = (splits.present_like_train(labeled[0]), labeled[1], 1.0)
                loss = step(x, data_scale=data_scale, beta=beta, labeled=extra)
                batch_index += 1
                if step.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
                    _restore(model, guide, step, epoch_start)
                    raise FloatingPointError(
                        f"the loss or its gradient was non-finite ({loss}) in "
                        f"{step.skipped_in_a_row} steps in a row (epoch {epoch}, step "
                        f"{batch_index}); those steps were skipped and the pair is restored "
                        f"to the start of epoch {epoch}. Lower learning_rate (now "
                        f"{config.learning_rate}) or use KL warm-up"
                    )
                if math.isfinite(loss):
                    total += loss * x.shape[0] / n_train
                    count += x.shape[0]
            seconds = time.perf_counter() - started
            val = (
                estimate_elbo(
                    model,
                    guide,
                    splits.validation,
                    config.objective,
                    max_plate_nesting=config.max_plate_nesting,
                )
                if has_validation
                else float("nan")
            )
            history.epoch.append(epoch)
            history.beta.append(beta)
            history.train_objective.append(-total / count if count else float("nan"))
            history.skipped_steps = step.skipped_total
            history.validation_elbo.append(val)
            history.seconds.append(seconds)
            bar.set_postfix(val_elbo=f"{val:.2f}", beta=f"{beta:.2f}")

            if config.patience is not None and has_validation and beta >= 1.0:
                if val > best_value:
                    best_value, bad_epochs = val, 0
                    history.best_epoch = epoch
                    best_state = {
                        "model": _state(model),
                        "guide": _state(guide),
                        "params": _copy_params(step.params),
                    }
                else:
                    bad_epochs += 1
            if not all(bool(torch.isfinite(p).all()) for p in step.params):
                _restore(model, guide, step, epoch_start)
                raise FloatingPointError(
                    f"the parameters became non-finite in epoch {epoch}; the pair is restored "
                    f"to the start of the epoch and nothing was checkpointed. Lower "
                    f"learning_rate (now {config.learning_rate})"
                )
            if checkpoint is not None:
                _save_atomic(
                    {
                        "format": CHECKPOINT_FORMAT,
                        "epoch": epoch,
                        "model": _state(model),
                        "guide": _state(guide),
                        "params": _copy_params(step.params),
                        "optimizer": step.optimizer.state_dict(),
                        "rng": _rng_state(),
                        "history": history.to_dict(),
                        "best_value": best_value,
                        "bad_epochs": bad_epochs,
                        "best_state": best_state,
                    },
                    Path(checkpoint),
                )
            if config.patience is not None and bad_epochs >= config.patience:
                history.stopped_early = True
                logger.info("early stop at epoch %d (best %s)", epoch, history.best_epoch)
                break
    if best_state is not None:
        _load_state(model, best_state["model"])
        _load_state(guide, best_state["guide"])
        with torch.no_grad():
            for p, saved in zip(step.params, best_state["params"], strict=True):
                p.copy_(saved)
    return history
