"""One optimisation step of an objective on a minibatch, with a native torch optimizer.

The loss and the gradients are checked BEFORE the optimizer step: a non-finite one is
skipped (and counted), so NaN or Inf never reaches the parameters or Adam's state. With
PyTorch's fused Adam the skip is decided on the device (the kernel's ``found_inf`` flag,
which GradScaler uses the same way), so a step needs no host read: :meth:`SVIStep.launch`
returns at once and :meth:`SVIStep.read` reads the outcomes later, while the device works
on the next step. Other optimizers read the check on the host before stepping."""

from __future__ import annotations

import logging
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger

from pyrovae.errors import PyrovaeError

from .objectives import DATA_PLATE, SiteScale, make_objective
from .traced import TRACEABLE_OBJECTIVES, TracedLoss

logger = logging.getLogger(__name__)

JIT_MODES = (False, True, "auto", None)
JIT_LABELLED_REFUSAL = (
    "jit=True records unlabelled losses only; train a semi-supervised pair with jit=False"
)


def check_jit(jit, objective: str) -> None:
    """Refuse a ``jit`` that is not one of :data:`JIT_MODES`, and ``jit=True`` with an
    objective no recording can replay."""
    if not any(jit is mode or (isinstance(mode, str) and jit == mode) for mode in JIT_MODES):
        raise PyrovaeError(f"jit must be one of {JIT_MODES}, got {jit!r}")
    if jit is True and objective not in TRACEABLE_OBJECTIVES:
        raise PyrovaeError(
            f"jit=True records the losses of {', '.join(TRACEABLE_OBJECTIVES)}; {objective} "
            "reads values on the host while it runs: use jit=False (or jit='auto')"
        )


def declares_static(part) -> bool:
    """Whether a model or guide says its loss can be recorded and replayed: a class
    attribute ``jit_static = True`` promises the same tensor operations for every batch of
    a given shape and no Python state read by the call that changes while training. The
    models and guides of pyrovae's ``models``/``guides`` packages declare it; a subclass
    that adds such state sets it back to False."""
    return getattr(part, "jit_static", False) is True


def resolve_jit(jit, declared_static: bool) -> bool | str:
    """The ``jit`` mode a step runs: ``jit`` itself, except None (``fit``'s default),
    which becomes ``"auto"`` for a pair whose model and guide both declare themselves
    static (``declared_static``, :func:`declares_static`) and False for any other pair,
    whose Python state a recording might freeze."""
    if jit is not None:
        return jit
    if declared_static:
        return "auto"
    logger.info(
        "training as Python on every step: the model and the guide do not both declare "
        "jit_static = True. If they do the same tensor operations for every batch of a "
        "shape and read no Python state that changes, set it on both (or pass "
        "jit='auto') and fit replays a recording of the loss instead, a faster step"
    )
    return False


# devices with a fused Adam kernel in PyTorch 2.x (torch.optim.Adam(..., fused=True))
FUSED_ADAM_DEVICES = ("cpu", "cuda")


def has_fused_adam(params) -> bool:
    """Whether PyTorch's fused Adam kernel takes every tensor of ``params``: floating
    point, on a device in :data:`FUSED_ADAM_DEVICES`."""
    return all(p.is_floating_point() and p.device.type in FUSED_ADAM_DEVICES for p in params)


def make_adam(params: list[torch.Tensor], learning_rate: float) -> torch.optim.Adam:
    """``torch.optim.Adam`` on ``params``, fused where PyTorch has the kernel.

    Same update rule as the default Adam; the fused kernel updates every tensor in one
    pass where the default runs about ten elementwise kernels per tensor.
    ``benchmarks/fit_epoch.py`` times both against a hand-written epoch. Other devices or
    non-floating tensors get the default implementation."""
    return torch.optim.Adam(params, lr=learning_rate, fused=has_fused_adam(params) or None)


def use_fused_kernel(optimizer: torch.optim.Optimizer) -> None:
    """Switch an Adam restored from a state saved without the fused kernel (a checkpoint
    written before pyrovae used it) back to it: same update rule, and the fused kernel
    keeps its step counts as float32 tensors on the parameters' device."""
    for group in optimizer.param_groups:
        params = group["params"]
        if group.get("fused") or not has_fused_adam(params):
            continue
        group["fused"] = True
        for p in params:
            state = optimizer.state.get(p, {})
            if "step" in state:
                state["step"] = torch.as_tensor(state["step"], dtype=torch.float32).to(p.device)


class StoredParams(Messenger):
    """Answer ``pyro.param`` (and so ``pyro.module``) from Pyro's param store directly.

    Inside a training step every parameter already exists; Pyro would still send each one
    through the whole handler stack, where the trace copies it into a site no ELBO reads.
    Placed innermost, this handler returns what the param store returns for the name (the
    same tensor the optimizer holds, constrained where the parameter has a constraint) and
    stops the message there. Names not yet in the store, and every call while ``active``
    is False (``SVIStep.setup`` collects the parameters from the traced param sites), take
    Pyro's usual path."""

    def __init__(self):
        super().__init__()
        self.active = False

    def _process_message(self, msg):
        if not self.active or msg["type"] != "param":
            return
        store = pyro.get_param_store()
        if msg["name"] not in store:
            return
        msg["value"] = store[msg["name"]]
        msg["stop"] = True
        msg["done"] = True


def guards_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every parameter group runs PyTorch's fused Adam, whose kernel skips the
    update (moments and step count included) when its ``found_inf`` flag is 1."""
    return isinstance(optimizer, torch.optim.Adam) and all(
        group.get("fused") for group in optimizer.param_groups
    )


@dataclass
class StepOutcome:
    """What one step did: ``loss``, the scaled loss (a negative ELBO estimate, nats, NaN
    or Inf when non-finite); ``skipped``: the loss or a gradient was non-finite, so the
    optimizer left the parameters and its state as they were; ``skipped_in_a_row``: the
    skipped steps up to and including this one since the last step taken."""

    loss: float
    skipped: bool
    skipped_in_a_row: int


class SVIStep:
    """One gradient step of ``objective`` on a minibatch, with native ``torch.optim.Adam``.

    Parameters are collected on the first call by tracing the loss (as ``pyro.infer.SVI``
    does); parameters a pair creates later are not optimised. With ``jit=True`` the loss of
    a static pair is recorded once per batch shape and replayed
    (:mod:`pyrovae.train.traced`): the same values and gradients without Pyro's per-step
    Python work; what cannot be recorded raises :class:`~pyrovae.errors.PyrovaeError`.
    With ``jit="auto"`` the step records where it can and otherwise runs the Python loss
    (an objective, a labelled term or a pair that cannot be recorded), logging why.
    ``jit=None`` (``fit``'s default) is ``"auto"`` for a pair that declares itself static
    and False for any other (:func:`resolve_jit`).
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        objective: str = "Trace_ELBO",
        learning_rate: float = 1e-3,
        num_particles: int = 1,
        data_plate: str = DATA_PLATE,
        max_plate_nesting: int = 1,
        jit: bool | str | None = False,
    ):
        check_jit(jit, objective)
        # a pair that declares itself static is taken at its word: no check between epochs
        self.declared_static = declares_static(model) and declares_static(guide)
        jit = resolve_jit(jit, self.declared_static)
        if jit == "auto" and objective not in TRACEABLE_OBJECTIVES:
            logger.info("jit='auto': %s runs as Python (it cannot be recorded)", objective)
            jit = False
        self.objective = objective
        self.num_particles = num_particles
        self.elbo = make_objective(objective, num_particles, max_plate_nesting)
        self.labeled_elbo = make_objective("Trace_ELBO", num_particles, max_plate_nesting)
        self.scaler = SiteScale(data_plate=data_plate)
        self.stored_params = StoredParams()  # turned on once setup has found the parameters
        self.model = self.scaler(self.stored_params(model))
        self.guide = self.scaler(self.stored_params(guide))
        self.learning_rate = learning_rate
        self.params: list[torch.Tensor] | None = None
        self.param_names: list[str] | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        # (params, loss) -> loss after summing gradients over processes; None: one process
        self.reducer: Callable | None = None
        self.skipped_in_a_row = 0  # non-finite steps skipped since the last good one
        self.skipped_total = 0
        self.replayed_total = 0  # steps whose loss replayed a recording
        self._rerecorded_earlier = 0  # by recordings given up since
        # per launched step not yet read: (loss, 1.0 if skipped else 0.0), on the device or read
        self._unread: deque[torch.Tensor | list[float]] = deque()
        self.jit = jit
        self.traced = TracedLoss(self._unlabeled_loss, self.scaler) if jit else None

    def _unlabeled_loss(self, x: torch.Tensor) -> torch.Tensor:
        return self.elbo.differentiable_loss(self.model, self.guide, x)

    def setup(
        self,
        x: torch.Tensor,
        labeled: tuple[torch.Tensor, torch.Tensor, float] | None = None,
        owners: dict | None = None,
    ) -> None:
        """Collect the parameters the loss registers and build the optimizer.

        With ``owners`` (``{"model": model, "guide": guide}``), also check that training
        can move every parameter: each ``nn.Module`` parameter of an owner must be among
        the optimised tensors, and each optimised tensor must receive a gradient from the
        loss. Both fail when a pair reuses a name already in Pyro's param store:
        ``pyro.module``/``pyro.param`` then hand back the first pair's tensors, which the
        second pair's networks never use, and training would silently change nothing."""
        with poutine.trace(param_only=True) as param_capture:
            self.elbo.differentiable_loss(self.model, self.guide, x)
        seen: dict[int, tuple[str, torch.Tensor]] = {}
        for name, site in param_capture.trace.nodes.items():
            p = site["value"].unconstrained()
            seen.setdefault(id(p), (name, p))
        self.param_names = [name for name, _ in seen.values()]
        self.params = [p for _, p in seen.values()]
        if not self.params:
            raise PyrovaeError(
                "the model and guide register no parameters; call pyro.module(name, net) "
                "inside them so their networks are trained"
            )
        self.optimizer = make_adam(self.params, self.learning_rate)
        if owners is not None:
            self._check_parameters(x, labeled, owners)
        self.stored_params.active = True

    def _check_parameters(self, x, labeled, owners: dict) -> None:
        optimised = {id(p) for p in self.params}
        unowned = [
            f"{label}.{name}"
            for label, owner in owners.items()
            if isinstance(owner, torch.nn.Module)
            for name, p in owner.named_parameters()
            if p.requires_grad and id(p) not in optimised
        ]
        self.scaler.data_scale, self.scaler.beta = 1.0, 1.0
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Encountered NaN")
            self._loss(x, labeled).backward()
        no_gradient = [
            n for n, p in zip(self.param_names, self.params, strict=True) if p.grad is None
        ]
        self.optimizer.zero_grad(set_to_none=True)
        if no_gradient or unowned:
            parts = []
            if no_gradient:
                parts.append(f"these param-store tensors receive no gradient: {no_gradient[:6]}")
            if unowned:
                parts.append(f"these network parameters are not being optimised: {unowned[:6]}")
            raise PyrovaeError(
                "training would leave parameters unchanged: "
                + "; ".join(parts)
                + ". The usual cause is a second pair registered under a name already in "
                "Pyro's param store (pyro.module/pyro.param return the FIRST pair's tensors "
                "for a repeated name): call pyro.clear_param_store() before building a new "
                "pair, or give each pair its own name=. A parameter the loss never uses "
                "should be frozen with requires_grad_(False)"
            )

    def _loss(self, x, labeled) -> torch.Tensor:
        loss = self.elbo.differentiable_loss(self.model, self.guide, x)
        if labeled is not None:
            x_l, y_l, scale_l = labeled
            self.scaler.data_scale = scale_l
            loss = loss + self.labeled_elbo.differentiable_loss(self.model, self.guide, x_l, y_l)
        return loss

    def __call__(
        self,
        x: torch.Tensor,
        data_scale: float = 1.0,
        beta: float = 1.0,
        labeled: tuple[torch.Tensor, torch.Tensor, float] | None = None,
    ) -> float:
        """Take one step and wait for it; return the scaled loss (a negative ELBO
        estimate, nats). Arguments as in :meth:`launch`."""
        self.launch(x, data_scale, beta, labeled)
        return self.read()[-1].loss

    def launch(
        self,
        x: torch.Tensor,
        data_scale: float = 1.0,
        beta: float = 1.0,
        labeled: tuple[torch.Tensor, torch.Tensor, float] | None = None,
    ) -> None:
        """Take one step on minibatch ``x`` (its loss scaled by ``data_scale``, N/B, and
        the KL by ``beta``) without waiting for the device where the optimizer can skip a
        non-finite step itself; :meth:`read` gives its :class:`StepOutcome`.

        ``labeled = (x_l, y_l, scale_l)`` adds the labelled term of a semi-supervised pair,
        ``-ELBO(x_l, y_l)`` computed by ``Trace_ELBO`` (y observed: nothing to enumerate)
        with the data plate scaled by ``scale_l`` (N_labelled / B_labelled)."""
        loss = self._backward(x, data_scale, beta, labeled).detach()
        found_inf = (~torch.isfinite(loss)).to(torch.float32)
        mark_non_finite([p.grad for p in self.params if p.grad is not None], found_inf)
        outcome = torch.stack([loss, found_inf.to(loss.dtype)])  # (loss, 1.0 if skipped)
        if guards_on_device(self.optimizer):
            # the kernel skips the update (and undoes its step count) when found_inf is 1
            self.optimizer.found_inf = found_inf
            self.optimizer.step()
            self.optimizer.found_inf = None
            self._unread.append(outcome)
            return
        values = outcome.tolist()  # one host read, before the step
        if values[1] == 0:
            self.optimizer.step()
        else:
            self.optimizer.zero_grad(set_to_none=True)
        self._unread.append(values)

    def read(self, leave: int = 0) -> list[StepOutcome]:
        """The outcomes of the launched steps not read yet, oldest first, except the last
        ``leave`` of them (``leave=1`` reads the previous step while the device runs the
        one just launched: one host sync for it). Counts the skipped steps."""
        outcomes = []
        while len(self._unread) > leave:
            values = self._unread.popleft()
            loss, flag = values.tolist() if isinstance(values, torch.Tensor) else values
            skipped = flag != 0
            if skipped:
                self.skipped_in_a_row += 1
                self.skipped_total += 1
            else:
                self.skipped_in_a_row = 0
            outcomes.append(StepOutcome(loss, skipped, self.skipped_in_a_row))
        return outcomes

    @property
    def rerecorded_total(self) -> int:
        """Recordings made again because the Python loss had changed since recording."""
        current = self.traced.rerecorded if self.traced is not None else 0
        return self._rerecorded_earlier + current

    def continue_counts(self, skipped: int, replayed: int, rerecorded: int) -> None:
        """Go on counting from a resumed run's totals."""
        self.skipped_total = skipped
        self.replayed_total = replayed
        self._rerecorded_earlier = rerecorded - (self.traced.rerecorded if self.traced else 0)

    def _stop_replaying(self) -> None:
        self._rerecorded_earlier = self.rerecorded_total
        self.traced = None

    def replayed_elbo(self, x: torch.Tensor, batch_size: int) -> float | None:
        """The ELBO of ``x`` in nats per row (beta 1), from the loss's recordings replayed
        without gradients in chunks of ``batch_size`` rows (``fit`` passes its training
        batch size: the chunks replay the training step's own recording, and hold no more
        memory than a step does; chunks of 1,000 rows took a VampPrior over a flow guide
        from 1.3 GB to 3.9 GB peak RSS on Fashion-MNIST): the figure
        :func:`~pyrovae.evaluate.estimate_elbo` computes with one particle, from the same
        random draws, without Pyro's Python per chunk or a host read per chunk. None where
        the step runs Python, where the pair does not declare itself static (running its
        Python may be what changes its state), where it trains with several particles
        (the recorded loss is then another estimator) or cannot record a chunk's shape:
        the caller then runs ``estimate_elbo``."""
        if self.traced is None or not self.declared_static or self.num_particles != 1:
            return None
        total = None
        try:
            for chunk in x.split(batch_size):
                loss = self.traced.value(self.params, chunk)
                total = loss if total is None else total + loss
        except PyrovaeError as refusal:
            logger.info("validation ELBO as Python: %s", refusal)
            return None
        return -float(total) / x.shape[0]

    def verify_recordings_again(self) -> None:
        """Have each recording of the loss compared with the Python loss once more at its
        next replay (:meth:`~pyrovae.train.traced.TracedLoss.verify_again`); ``fit`` calls
        this at every epoch's start. Nothing to do without ``jit``, and for a pair that
        declares itself static (:func:`declares_static`): it promises no changing state,
        and the check costs a Python forward pass and a replayed one per recording (about
        6 % of an epoch of ten batches: ``benchmarks/fit_epoch.py --batch-size 1024``)."""
        if self.traced is not None and not self.declared_static:
            self.traced.verify_again()

    def forget_unread(self) -> None:
        """Drop the outcomes not read yet (after a failed epoch was restored)."""
        self._unread.clear()

    def _backward(self, x, data_scale, beta, labeled) -> torch.Tensor:
        """The loss of minibatch ``x``, its gradients in ``.grad`` (summed over processes
        when data-parallel); returns the loss."""
        if self.optimizer is None:
            self.setup(x)
        if self.traced is not None and labeled is not None and self.jit == "auto":
            self._stop_replaying()  # a labelled term: Python
        loss = None
        if self.traced is not None:
            if labeled is not None:
                raise PyrovaeError(JIT_LABELLED_REFUSAL)
            try:
                loss = self.traced(self.params, x, data_scale, beta)
                self.replayed_total += 1
            except PyrovaeError as refusal:
                if self.jit != "auto":
                    raise
                logger.info("jit='auto': training without a recording: %s", refusal)
                self._stop_replaying()  # refused while recording: no step taken, nothing drawn
        if loss is None:
            self.scaler.data_scale, self.scaler.beta = data_scale, beta
            with warnings.catch_warnings():
                # a NaN loss is handled by the step's check; Pyro's warning adds nothing
                warnings.filterwarnings("ignore", message="Encountered NaN")
                loss = self._loss(x, labeled)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.reducer is not None:  # data-parallel: sum gradients and loss over processes
            loss = self.reducer(self.params, loss)
        return loss


def mark_non_finite(tensors: list[torch.Tensor], found_inf: torch.Tensor) -> None:
    """Set ``found_inf`` (a float32 scalar tensor) to 1.0 when an entry of ``tensors`` is
    NaN or infinite; leave it as it is otherwise. One fused pass per device and dtype:
    PyTorch's ``_amp_foreach_non_finite_check_and_unscale_``, the check GradScaler runs,
    here with a scale of 1.0, which leaves every value as it was. One call instead of a
    sum per tensor (and on CUDA one kernel): Python's dispatch cost per tensor is gone,
    and for large tensors reading the entries is the cost either way."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        t = t.detach()
        if t.is_sparse:
            t = t.coalesce().values()
        groups.setdefault((t.device, t.dtype), []).append(t)
    for (device, _), group in groups.items():
        found = found_inf if device == found_inf.device else found_inf.new_zeros((), device=device)
        one = torch.ones((), dtype=torch.float32, device=device)
        torch._amp_foreach_non_finite_check_and_unscale_(group, found, one)
        if found is not found_inf:
            found_inf.copy_(torch.maximum(found_inf, found.to(found_inf.device)))


def entry_sums(tensors: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Shape ``(len(tensors),)``: the sum of each tensor's entries, with ``like``'s dtype
    and device. A sum is non-finite exactly when some entry is NaN or infinite, or when
    finite entries add up past the dtype's range."""
    if not tensors:
        return like.new_zeros((0,))
    sums = [t.detach().sum() for t in tensors]
    if any(s.dtype != like.dtype or s.device != like.device for s in sums):
        sums = [s.to(like.device, like.dtype) for s in sums]
    return torch.stack(sums)


def sum_of_entries(tensors: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """The sum of every entry of ``tensors`` as one scalar with ``like``'s dtype and device
    (zero for no tensors), for a single host read; non-finite as :func:`entry_sums` says."""
    return entry_sums(tensors, like).sum()
