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
Failures never reach the parameters or a checkpoint: a step with a non-finite loss or
gradient is skipped (:class:`~pyrovae.train.step.SVIStep`); several in a row, a finite
loss that explodes or plunges (:class:`~pyrovae.train.divergence.DivergenceMonitor`), a non-finite
validation ELBO or a non-finite parameter or optimizer state end the epoch, restore the
pair to the start of the epoch, and either raise :class:`~pyrovae.errors.TrainingDiverged`
(``on_nan="raise"``) or halve the learning rate and run the epoch again
(``on_nan="rollback"``, at most ``max_rollbacks`` times).

Optimisation uses a native ``torch.optim.Adam`` over the parameters the pair registers
with ``pyro.module``/``pyro.param`` (cheaper than ``pyro.optim`` and checkpointable as one
``state_dict``).
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

import pyrovae.distributions  # noqa: F401  (registers the KLs TraceMeanField_ELBO needs)
from pyrovae.checks import check_pair, latent_sites, trace_pair
from pyrovae.data import DataSplits, make_splits
from pyrovae.denormals import flushed_denormals
from pyrovae.distributions import kl_path
from pyrovae.errors import PyrovaeError, TrainingDiverged, did_you_mean
from pyrovae.evaluate.objective import estimate_elbo
from pyrovae.time_limit import check_time_limit, next_unit_ends_late

from .checkpoint import (
    Checkpoint,
    clone_state,
    config_differences,
    load_module_state,
    module_state,
    move,
    remove_stale_temporary,
    rng_state,
    set_rng_state,
)
from .distributed import DistributedContext
from .divergence import DivergenceMonitor
from .early_stopping import EarlyStopping
from .objectives import check_objective, find_data_plate, make_objective, warmup_sites
from .step import JIT_LABELLED_REFUSAL, SVIStep, check_jit, sum_of_entries, use_fused_kernel

logger = logging.getLogger(__name__)

MAX_SKIPPED_IN_A_ROW = 3  # non-finite steps in a row that end the epoch
ON_NAN = ("raise", "rollback")
# Settings a resumed run may change without --override: how long it runs and where, not
# what it computes.
FREE_ON_RESUME = ("epochs", "progress", "device", "jit", "time_limit")
OVERRIDE_ALIASES = {"lr": "learning_rate"}  # CLI flag names that differ from FitConfig's


class _EpochFailed(Exception):
    """Internal: the epoch produced a non-finite or exploding value (message says which)."""


def kl_paths(model: Callable, guide: Callable, x: torch.Tensor, objective: str) -> str:
    """How ``objective`` estimates each latent site's KL term on this pair, e.g.
    ``"z=analytic"`` or ``"z=monte-carlo"``, comma-separated. Only ``TraceMeanField_ELBO``
    uses a closed form (where one is registered for the pair); ``Trace_ELBO`` and
    ``TraceEnum_ELBO`` estimate log q(z|x) - log p(z) at the sampled z, and IWAE has no
    separate KL term."""
    if objective == "IWAE":
        return "none (IWAE bounds log p(x) directly)"
    with pyro.validation_enabled(False):
        guide_trace, model_trace = trace_pair(model, guide, x)
    paths = []
    for name in latent_sites(guide_trace):
        if name not in model_trace.nodes:
            continue
        if objective == "TraceMeanField_ELBO":
            how = kl_path(guide_trace.nodes[name]["fn"], model_trace.nodes[name]["fn"])
        else:
            how = "monte-carlo"
        paths.append(f"{name}={how}")
    return ",".join(paths)


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
    divergence_factor: float | None = 10.0  # see pyrovae.train.divergence; None: off
    on_nan: str = "raise"  # or "rollback": restore the epoch, halve the learning rate
    max_rollbacks: int = 3
    distributed: bool = False  # data-parallel under torchrun (pyrovae.train.distributed)
    # replay a recording of the loss (pyrovae.train.traced): True for a static pair (and
    # refuse one that is not), "auto" to record where possible and run Python otherwise,
    # False for Python on every step; None: "auto" for a pair whose model and guide both
    # declare jit_static = True (pyrovae's own do), False for any other
    jit: bool | str | None = None
    # seconds: end the call at an epoch boundary before this much time has passed (a
    # cluster job's wall time); the checkpoint then resumes where it stopped. None: no limit
    time_limit: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FitConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise PyrovaeError(
                f"unknown FitConfig fields {sorted(unknown)}"
                f"{did_you_mean(sorted(unknown)[0], known)}; valid: {sorted(known)}"
            )
        return cls(**d)

    def validate(self) -> None:
        make_objective(self.objective, self.num_particles)
        for name in ("epochs", "batch_size", "max_plate_nesting"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise PyrovaeError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise PyrovaeError(f"learning_rate must be finite and > 0, got {self.learning_rate}")
        if self.warmup_epochs < 0:
            raise PyrovaeError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.patience is not None and self.patience < 1:
            raise PyrovaeError(f"patience must be >= 1 or None, got {self.patience}")
        if self.divergence_factor is not None and not self.divergence_factor > 0:
            raise PyrovaeError(
                f"divergence_factor must be > 0 or None (off), got {self.divergence_factor}"
            )
        check_jit(self.jit, self.objective)
        check_time_limit(self.time_limit)
        if self.on_nan not in ON_NAN:
            raise PyrovaeError(f"on_nan must be one of {ON_NAN}, got {self.on_nan!r}")
        if self.max_rollbacks < 0:
            raise PyrovaeError(f"max_rollbacks must be >= 0, got {self.max_rollbacks}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise PyrovaeError(
                f"device={self.device!r} but CUDA is not available; use device='cpu'"
            )
        try:
            torch.device(self.device)
        except RuntimeError:
            raise PyrovaeError(
                f"device={self.device!r} is not a device torch knows; use 'cpu', 'cuda' or 'cuda:N'"
            ) from None

    def beta(self, epoch: int) -> float:
        """KL weight in epoch ``epoch`` (1-based): ``min(1, epoch / warmup_epochs)``."""
        return 1.0 if self.warmup_epochs == 0 else min(1.0, epoch / self.warmup_epochs)


@dataclass
class FitHistory:
    """Per-epoch record of a run. ELBOs in nats per data point (higher is better)."""

    epoch: list[int] = field(default_factory=list)
    beta: list[float] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)
    train_objective: list[float] = field(default_factory=list)  # beta-weighted, minibatch mean
    validation_elbo: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # training steps only
    # the whole epoch: steps, validation ELBO, state capture and checks (not the
    # checkpoint write); NaN for epochs recorded before this field existed
    epoch_seconds: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    # the call ended before config.epochs because the next epoch would pass time_limit
    time_limited: bool = False
    skipped_steps: int = 0  # steps skipped for a non-finite loss or gradient
    # jit: steps whose loss replayed a recording, and recordings made again because the
    # Python loss had changed (pyrovae.train.traced.TracedLoss.verify_again)
    replayed_steps: int = 0
    rerecorded: int = 0
    rollbacks: list[dict] = field(default_factory=list)  # on_nan="rollback": what and when
    kl_path: str = ""
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FitHistory:
        history = cls(**d)
        missing = len(history.epoch) - len(history.epoch_seconds)
        history.epoch_seconds = [float("nan")] * missing + history.epoch_seconds
        return history

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
    raise PyrovaeError(
        "data must be DataSplits (load_dataset), a tensor (N, D), or a tuple "
        f"(train, validation[, test]); got {type(data).__name__}"
    )


def data_summary(splits: DataSplits) -> dict:
    """What identifies the training data in a checkpoint: its size and a checksum (the
    float64 sum, 9 significant digits, equal on CPU and CUDA)."""
    return {
        "train_rows": int(splits.train.shape[0]),
        "features": int(splits.num_features),
        "train_sum": f"{float(splits.train.sum(dtype=torch.float64)):.9g}",
    }


def pair_summary(model, guide) -> dict:
    """What identifies a pair in a checkpoint: each side's printed structure for an
    ``nn.Module`` (class names and layer sizes, so a full-covariance guide is told from a
    diagonal one with equally shaped tensors), its qualified name for a function."""

    def describe(obj) -> str:
        if isinstance(obj, torch.nn.Module):
            return " ".join(str(obj).split())
        return getattr(obj, "__qualname__", type(obj).__qualname__)

    return {"model": describe(model), "guide": describe(guide)}


def _check_labeled(labeled, splits: DataSplits) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_l, y_l) on the data's device, with the shapes checked."""
    x_l, y_l = labeled
    if x_l.dim() != 2 or x_l.shape[1] != splits.num_features or y_l.shape != (x_l.shape[0],):
        raise PyrovaeError(
            f"labeled must be (x of shape (M, {splits.num_features}), y of shape (M,)); got "
            f"{tuple(x_l.shape)} and {tuple(y_l.shape)}"
        )
    return x_l.to(splits.train.device), y_l.to(splits.train.device).long()


# --------------------------------------------------------------- state of the pair


def _capture(model, guide, step: SVIStep, optimizer: bool = True) -> dict:
    """Pair and optimised tensors, plus the optimizer state when ``optimizer`` (what a
    failed epoch is undone to; early stopping's best state needs only the parameters)."""
    state = {
        "model": module_state(model),
        "guide": module_state(guide),
        "params": [p.detach().clone() for p in step.params],
    }
    if optimizer:
        state["optimizer"] = clone_state(step.optimizer.state_dict())
    return state


def _restore(model, guide, step: SVIStep, state: dict) -> None:
    load_module_state(model, state["model"])
    load_module_state(guide, state["guide"])
    with torch.no_grad():
        for p, saved in zip(step.params, state["params"], strict=True):
            p.copy_(saved)
    if "optimizer" in state:
        step.optimizer.load_state_dict(state["optimizer"])


def _non_finite_state(step: SVIStep) -> str | None:
    """Which parameter or optimizer-state tensor holds NaN/Inf, or None.

    One sum per tensor, read back together (a sum is non-finite exactly when an entry is,
    or when finite entries overflow: a divergence too); tensors are searched one by one
    only when that total is not finite."""
    tensors = {}
    for name, p in zip(step.param_names, step.params, strict=True):
        tensors[f"parameter {name!r}"] = p
        for key, value in step.optimizer.state.get(p, {}).items():
            if torch.is_tensor(value) and value.is_floating_point():
                tensors[f"the optimizer's {key} of {name!r}"] = value
    like = step.params[0].new_zeros((), dtype=torch.float32)
    if math.isfinite(sum_of_entries(list(tensors.values()), like).item()):
        return None
    for label, value in tensors.items():
        if not bool(torch.isfinite(value).all()):
            return label
    return None


# --------------------------------------------------------------------------- resume


def _check_module_state(label: str, module, state: dict, path) -> None:
    """PyrovaeError naming every key or shape of ``state`` that ``module`` does not have."""
    if not isinstance(module, torch.nn.Module):
        return
    current = module.state_dict()
    problems = [f"{k} is missing" for k in current if k not in state]
    problems += [f"{k} is not in this {label}" for k in state if k not in current]
    problems += [
        f"{k} has shape {tuple(state[k].shape)} in the checkpoint, {tuple(v.shape)} here"
        for k, v in current.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if problems:
        raise PyrovaeError(
            f"checkpoint {path} was written by a different {label}: {'; '.join(problems[:5])}"
            f"{' ...' if len(problems) > 5 else ''}. Resume with the model, guide and options "
            "that wrote it"
        )


def _check_resume(ckpt: Checkpoint, run: dict, step: SVIStep, override, path) -> None:
    """Refuse a resume whose settings or parameters differ from the checkpoint's."""
    valid = sorted({*run["config"], *run["spec"], "data", "pair"})
    unknown = [name for name in override if name not in valid]
    if unknown:
        raise PyrovaeError(
            f"override names unknown settings {unknown}{did_you_mean(unknown[0], valid)}; "
            f"settings: {', '.join(valid)}"
        )
    differences = [
        d
        for d in config_differences(ckpt.run, run, ignore=FREE_ON_RESUME)
        if not set(d.split(":")[0].split(".")) & set(override)
    ]
    if differences:
        raise PyrovaeError(
            f"checkpoint {path} was written with other settings: {'; '.join(differences)}. "
            "Resume with the same settings, or name the ones you change on purpose with "
            "override= (CLI: --override NAME)"
        )
    saved = list(ckpt.params.items())
    if len(saved) != len(step.params) or any(
        tuple(s.shape) != tuple(p.shape) for (_, s), p in zip(saved, step.params, strict=False)
    ):
        pairs = [
            f"{name} {tuple(s.shape)} vs {current} {tuple(p.shape)}"
            for (name, s), current, p in zip(saved, step.param_names, step.params, strict=False)
            if tuple(s.shape) != tuple(p.shape)
        ]
        raise PyrovaeError(
            f"checkpoint {path} holds {len(saved)} parameters, this pair has "
            f"{len(step.params)}{': ' + '; '.join(pairs[:3]) if pairs else ''}. Resume with the "
            "model, guide and options that wrote it"
        )


def _resume(ckpt: Checkpoint, model, guide, step, stopping, divergence, path) -> FitHistory:
    _check_module_state("model", model, ckpt.model, path)
    _check_module_state("guide", guide, ckpt.guide, path)
    load_module_state(model, ckpt.model)
    load_module_state(guide, ckpt.guide)
    with torch.no_grad():
        for p, saved in zip(step.params, ckpt.params.values(), strict=True):
            p.copy_(saved)
    step.optimizer.load_state_dict(ckpt.optimizer)
    use_fused_kernel(step.optimizer)
    stopping.load_state_dict(ckpt.monitors["early_stopping"])
    divergence.load_state_dict(ckpt.monitors["divergence"])
    set_rng_state(ckpt.rng)
    logger.info("resumed from %s at epoch %d", path, ckpt.epoch)
    history = FitHistory.from_dict(ckpt.history)
    step.continue_counts(history.skipped_steps, history.replayed_steps, history.rerecorded)
    return history


# ------------------------------------------------------------------------------ fit


def fit(
    model: Callable,
    guide: Callable,
    data: DataSplits | torch.Tensor | tuple,
    config: FitConfig | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    labeled: tuple[torch.Tensor, torch.Tensor] | None = None,
    run_info: dict | None = None,
    override: Iterable[str] = (),
    **overrides,
) -> FitHistory:
    """Train ``guide`` and ``model`` by SVI on ``data``'s training split.

    On the CPU the epochs run with subnormal floats flushed to zero (mode restored on
    return; :mod:`pyrovae.denormals` says why).

    Args:
        model, guide: Pyro callables taking a batch ``x`` of shape ``(B, D)`` whose local
            sites live in a plate over the batch's rows (any name; ``data_plate=`` picks one
            when several qualify). If they are ``nn.Module`` s they are moved to
            ``config.device`` and checkpointed through their ``state_dict``.
        data: :class:`~pyrovae.data.DataSplits`, a tensor, or (train, validation[, test]).
        config: a :class:`FitConfig`; keyword ``overrides`` replace its fields.
        checkpoint: file written (atomically) after every epoch: a
            :class:`~pyrovae.train.checkpoint.Checkpoint` with the pair, optimizer, RNG
            state, history and the settings of the run.
        resume: a checkpoint to continue from; the run then ends where an uninterrupted
            run with the same config and seed would. Its settings (config, ``run_info``,
            a checksum of the training data) must equal this call's, except ``epochs``,
            ``device`` and ``progress`` and the names listed in ``override``.
        labeled: ``(x_l, y_l)`` for a semi-supervised pair called as ``model(x, y)``: every
            step adds the labelled ELBO of all of them (their own N_l/B_l = 1 scale; gray
            levels are binarized per step like the training batches), so the loss is
            ``-[ELBO(unlabelled) + ELBO(labelled)]`` as in Kingma et al. (2014).
        run_info: the caller's description of the pair (e.g. the CLI's RunSpec), stored in
            the checkpoint and compared on resume.
        override: settings a resume may change on purpose (e.g. ``("learning_rate",)``: the
            optimizer then continues with the new rate).

    Returns:
        a :class:`FitHistory`; with ``patience`` set, the best-validation parameters are
        restored at the end.

    Raises:
        PyrovaeError: bad data, config, pair or checkpoint (before any training).
        TrainingDiverged: non-finite or exploding training that rollbacks did not cure;
            the pair is left as it was at the start of the failing epoch.
    """
    called = time.perf_counter()
    config = FitConfig.from_dict({**(config or FitConfig()).to_dict(), **overrides})
    config.validate()
    override = tuple(OVERRIDE_ALIASES.get(n, n.replace("-", "_")) for n in override)
    context = DistributedContext.from_environment(config.device) if config.distributed else None
    if context is not None and config.device == "cuda":  # one GPU per process
        config.device = f"cuda:{context.local_rank}"
        torch.cuda.set_device(context.local_rank)
    if context is not None and labeled is not None:
        raise PyrovaeError("distributed training of semi-supervised pairs is not supported yet")
    if config.jit is True and labeled is not None:
        raise PyrovaeError(JIT_LABELLED_REFUSAL)
    splits = as_splits(data).to(config.device)
    move(model, config.device)
    move(guide, config.device)
    check_pair(model, guide, splits)
    if checkpoint is not None:
        if Path(checkpoint).is_dir():
            raise PyrovaeError(f"checkpoint={checkpoint} is a folder; name a file in it")
        if (context is None or context.is_main) and remove_stale_temporary(checkpoint):
            logger.info("removed a stale %s.tmp left by an interrupted write", checkpoint)

    pyro.set_rng_seed(config.seed)
    probe = next(splits.batches("train", config.batch_size))
    data_plate, self_scaled = find_data_plate(model, guide, probe, config.data_plate)
    if context is not None and self_scaled:
        raise PyrovaeError(
            "distributed training splits each batch itself; a plate that subsamples itself "
            "(subsample=) cannot be split: use a plain plate over the batch's rows"
        )
    step = SVIStep(
        model,
        guide,
        config.objective,
        config.learning_rate,
        config.num_particles,
        data_plate,
        config.max_plate_nesting,
        config.jit,  # None resolves inside the step, from what the pair declares
    )
    if config.objective == "TraceEnum_ELBO":
        step.scaler.beta_sites = warmup_sites(model, guide, probe, config.max_plate_nesting)
    check_objective(config.objective, step.elbo, step.model, step.guide, probe)
    labeled_probe = None
    if labeled is not None:
        labeled = _check_labeled(labeled, splits)
        x_l = splits.present_like_train(labeled[0])
        check_objective("Trace_ELBO", step.labeled_elbo, step.model, step.guide, x_l, labeled[1])
        labeled_probe = (x_l, labeled[1], 1.0)
    step.setup(probe, labeled_probe, owners={"model": model, "guide": guide})
    if context is not None:
        step.reducer = context.reduce_gradients

    history = FitHistory(
        config=config.to_dict(), kl_path=kl_paths(model, guide, probe, config.objective)
    )
    run = {
        "config": config.to_dict(),
        "spec": dict(run_info or {}),
        "data": data_summary(splits),
        "pair": pair_summary(model, guide),
    }
    stopping = EarlyStopping(config.patience)
    divergence = DivergenceMonitor(config.divergence_factor)
    start_epoch = 1
    if resume is not None:
        ckpt = Checkpoint.load(resume)
        _check_resume(ckpt, run, step, override, resume)
        history = _resume(ckpt, model, guide, step, stopping, divergence, resume)
        history.config = config.to_dict()
        if "learning_rate" in override:
            for group in step.optimizer.param_groups:
                group["lr"] = config.learning_rate
        start_epoch = ckpt.epoch + 1
        if stopping.should_stop:  # the run had stopped early: nothing left to train
            logger.info("%s stopped early at epoch %d: nothing to resume", resume, ckpt.epoch)
            history.stopped_early = True
            start_epoch = config.epochs + 1

    n_train = splits.train.shape[0]
    has_validation = splits.validation is not None
    bar = tqdm(total=config.epochs, initial=start_epoch - 1, disable=not config.progress)
    epoch = start_epoch
    walls = []  # seconds of each epoch of this call, its checkpoint write included
    # check_pair validated the inputs already; subnormal floats only slow the CPU down
    with pyro.validation_enabled(False), flushed_denormals(config.device):
        while epoch <= config.epochs:
            if _out_of_time(config.time_limit, called, walls, context, config.device):
                history.time_limited = True
                logger.info(
                    "stopping before epoch %d: at %.1f s per epoch it would end past "
                    "time_limit=%g s; resume from the checkpoint to go on",
                    epoch,
                    statistics.mean(walls),
                    config.time_limit,
                )
                break
            beta = config.beta(epoch)
            epoch_began = time.perf_counter()
            epoch_start = _capture(model, guide, step)
            try:
                started = time.perf_counter()
                if context is not None:
                    context.reseed(config.seed, epoch)
                step.verify_recordings_again()
                objective = _train_epoch(
                    step,
                    splits,
                    config,
                    beta,
                    n_train,
                    self_scaled,
                    labeled,
                    divergence,
                    context,
                    epoch,
                )
                seconds = time.perf_counter() - started
                val = float("nan")
                if has_validation:
                    # from the loss's recordings where the step has them (the same figure
                    # from the same draws); a plate that scales itself needs Python's. Both
                    # in chunks of the training batch: the same draws either way, and no
                    # more memory than a training step holds
                    val = (
                        None
                        if self_scaled
                        else step.replayed_elbo(splits.validation, config.batch_size)
                    )
                    if val is None:
                        with warnings.catch_warnings():  # a NaN is handled just below
                            warnings.filterwarnings("ignore", message="Encountered NaN")
                            val = estimate_elbo(
                                model,
                                guide,
                                splits.validation,
                                config.objective,
                                batch_size=config.batch_size,
                                max_plate_nesting=config.max_plate_nesting,
                            )
                    if context is not None:  # the same figure, and decisions, everywhere
                        val = context.mean(val, config.device)
                    if not math.isfinite(val):
                        raise _EpochFailed(f"the validation ELBO is {val}")
                bad = _non_finite_state(step)
                if bad is not None:
                    raise _EpochFailed(f"{bad} became non-finite")
            except _EpochFailed as failure:
                _restore(model, guide, step, epoch_start)
                step.forget_unread()
                step.skipped_in_a_row = 0
                lr = step.optimizer.param_groups[0]["lr"]
                if config.on_nan == "rollback" and len(history.rollbacks) < config.max_rollbacks:
                    for group in step.optimizer.param_groups:
                        group["lr"] = lr / 2
                    history.rollbacks.append(
                        {"epoch": epoch, "reason": str(failure), "learning_rate": lr / 2}
                    )
                    logger.warning(
                        "epoch %d: %s; rolled back to the start of the epoch, learning rate "
                        "%g -> %g",
                        epoch,
                        failure,
                        lr,
                        lr / 2,
                    )
                    continue
                tried = f" after {len(history.rollbacks)} rollbacks" if history.rollbacks else ""
                raise TrainingDiverged(
                    f"epoch {epoch}: {failure}{tried}. The pair is restored to the start of "
                    f"epoch {epoch} and nothing non-finite was checkpointed. Lower the learning "
                    f"rate (now {lr:g}), use KL warm-up, or pass on_nan='rollback' "
                    "(CLI: --on-nan rollback)"
                ) from None
            history.epoch.append(epoch)
            history.beta.append(beta)
            history.learning_rate.append(step.optimizer.param_groups[0]["lr"])
            history.train_objective.append(objective)
            history.skipped_steps = step.skipped_total
            history.replayed_steps = step.replayed_total
            history.rerecorded = step.rerecorded_total
            history.validation_elbo.append(val)
            history.seconds.append(seconds)
            history.epoch_seconds.append(time.perf_counter() - epoch_began)
            bar.update(1)
            bar.set_postfix(val_elbo=f"{val:.2f}", beta=f"{beta:.2f}")
            logger.info(
                "epoch %d: beta %.3g, training objective %.4g, validation ELBO %.4g nats per "
                "point, %.1f s",
                epoch,
                beta,
                objective,
                val,
                seconds,
            )
            if has_validation and beta >= 1.0:
                stopping.update(epoch, val, lambda: _capture(model, guide, step, optimizer=False))
                history.best_epoch = stopping.best_epoch
            # recorded before the checkpoint: the last checkpoint of a stopped run says so
            history.stopped_early = stopping.should_stop
            if checkpoint is not None and (context is None or context.is_main):
                Checkpoint(
                    epoch=epoch,
                    model=module_state(model),
                    guide=module_state(guide),
                    params={
                        n: p.detach().clone()
                        for n, p in zip(step.param_names, step.params, strict=True)
                    },
                    optimizer=step.optimizer.state_dict(),
                    rng=rng_state(),
                    history=history.to_dict(),
                    monitors={
                        "early_stopping": stopping.state_dict(),
                        "divergence": divergence.state_dict(),
                    },
                    run=run,
                ).save(checkpoint)
            if context is not None:
                context.barrier()  # no process runs ahead of the checkpoint
            walls.append(time.perf_counter() - epoch_began)
            if history.stopped_early:
                logger.info("early stop at epoch %d (best %s)", epoch, stopping.best_epoch)
                break
            epoch += 1
    bar.close()
    if stopping.best_state is not None:
        _restore(model, guide, step, stopping.best_state)
    return history


def _out_of_time(time_limit, called, walls, context, device) -> bool:
    """Whether one more epoch, at the mean pace of this call's epochs so far, would end
    more than ``time_limit`` seconds after fit was ``called``. The first epoch always
    runs. Data-parallel processes decide together, whatever limit each was given: any
    one out of time stops them all (one small all-reduce per epoch)."""
    if not walls:
        return False
    late = next_unit_ends_late(time_limit, called, walls)
    if context is not None:
        late = context.mean(float(late), device) > 0
    return late


def _train_epoch(
    step, splits, config, beta, n_train, self_scaled, labeled, divergence, context=None, epoch=1
) -> float:
    """One pass over the shuffled training split; the beta-weighted objective per point
    (minibatch losses weighted by their size). ``_EpochFailed`` on too many non-finite
    steps in a row or on divergence, seen when that step's outcome is read: with fused
    Adam one step later (:meth:`SVIStep.launch`), which the epoch's restore undoes. With a
    distributed ``context`` each process takes its shard of every global batch; losses and
    gradients are summed over processes."""
    total, count = 0.0, 0
    shuffle = {}
    if context is not None:
        shuffle = {
            "generator": context.shuffle_generator(config.seed, epoch),
            "shard": context.shard(),
        }
    batches = splits.batches("train", config.batch_size, shuffle=True, **shuffle)
    launched = deque()  # (step index, global rows) of the steps whose outcome is unread

    def account(outcome) -> None:
        nonlocal total, count
        index, global_rows = launched.popleft()
        if outcome.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise _EpochFailed(
                f"the loss or its gradient was non-finite ({outcome.loss}) in "
                f"{outcome.skipped_in_a_row} steps in a row (step {index}; those steps were "
                "skipped)"
            )
        per_point = outcome.loss / n_train
        verdict = divergence.verdict(per_point)
        if verdict == "exploded":
            raise _EpochFailed(
                f"training diverged at step {index}: the loss is {per_point:.4g} "
                f"nats per point, above {divergence.limit():.4g} (the best so far, "
                f"{divergence.best:.4g}, plus divergence_factor={divergence.factor} times the "
                f"loss's scale {divergence.scale():.4g})"
            )
        if verdict == "plunged":
            raise _EpochFailed(
                f"the loss plunged at step {index} to {per_point:.4g} nats per point, below "
                f"{divergence.lower_limit():.4g} (the best so far, {divergence.best:.4g}, "
                f"minus divergence_factor={divergence.factor} times the loss's scale "
                f"{divergence.scale():.4g}). Training does not improve that fast: a log "
                "density is being computed wrongly and the optimizer exploits the error (seen "
                "with torch's MultivariateNormal.log_prob of a guide's own draws in float32 "
                "with an ill-conditioned scale_tril; pyrovae.distributions.MultivariateNormal "
                "scores its own draws exactly). A smaller learning rate will not mend that"
            )
        if math.isfinite(outcome.loss):
            total += outcome.loss * global_rows / n_train
            count += global_rows

    for index, x in enumerate(batches, 1):
        global_rows = min(config.batch_size, n_train - (index - 1) * config.batch_size)
        data_scale = 1.0 if self_scaled else n_train / global_rows
        extra = None
        if labeled is not None:
            extra = (splits.present_like_train(labeled[0]), labeled[1], 1.0)
        step.launch(x, data_scale=data_scale, beta=beta, labeled=extra)
        launched.append((index, global_rows))
        # the previous step's outcome, read while the device runs this one: a skipped or
        # diverged step is seen one step late, and the epoch is restored all the same
        for outcome in step.read(leave=1):
            account(outcome)
    for outcome in step.read():
        account(outcome)
    return -total / count if count else float("nan")
