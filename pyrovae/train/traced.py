"""The training loss replayed from a recording of its tensor operations (``jit=True``).

With small networks a Pyro step spends most of its time in Python: every ``pyro.sample``
crosses the handler stack, the traces record each site, the ELBO walks them
(``benchmarks/svi_step.py`` measured about 1.4 ms of such work per step on a 784-8-2 VAE,
where the networks take 0.1 ms). For a *static* pair, one that performs the same tensor
operations on every batch of a given shape, only the values change from step to step.
:class:`TracedLoss` records those operations once per batch shape with ``make_fx``
(``torch.fx``, in pre-dispatch mode, so that ``torch.no_grad`` blocks and ``detach`` stay
what they were) and afterwards replays the recording: the same loss value and gradients
as the Python loss, from the same random draws (each replay draws afresh from torch's
generator, and consumes it exactly as the Python loss does: a run trains identically with
and without ``jit``, and recording consumes nothing).

Inputs of a recording: the optimised parameters, the batch, and the two scales (the data
scale N/B and the warm-up weight beta, as 0-dim tensors, so a new value needs no new
recording). Everything else the loss reads is frozen at recording time, hence the contract:

- Python control flow on tensor *values* (``if x.sum() > 0``, ``.item()``, a NaN check)
  cannot be recorded: ``make_fx`` refuses it and :class:`TracedLoss` raises
  :class:`~pyrovae.errors.PyrovaeError` saying so.
- Python state the pair reads is frozen at its recorded value. Unless the pair declares
  itself static (``jit_static = True``), ``fit`` compares each recording with the Python
  loss again at the start of every epoch (:meth:`TracedLoss.verify_again`: one forward
  pass of each, from the same draws) and records again where they differ, so state
  changed between epochs is picked up before the epoch's first step. State that changes on every
  call fails the check made at recording time, and ``jit="auto"`` then runs Python.
  State that changes within an epoch, but not on every call, keeps its recorded value
  until the next epoch's check: train such a pair with ``jit=False``.
"""

from __future__ import annotations

import contextlib
import logging
import operator
from collections.abc import Callable, Iterator

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from pyrovae.errors import PyrovaeError

from .objectives import SiteScale

logger = logging.getLogger(__name__)

# objectives whose loss is a pure tensor function once validation is off: no host reads
TRACEABLE_OBJECTIVES = ("TraceMeanField_ELBO", "Trace_ELBO", "IWAE")


class TracedLoss:
    """``loss(x)`` of a pair, recorded once per ``(shape, dtype, device)`` of the batch and
    replayed on later calls.

    Args:
        loss: ``x -> -ELBO`` estimate (a 0-dim tensor), scaled by ``scaler``.
        scaler: the :class:`~pyrovae.train.objectives.SiteScale` the loss runs under; its
            ``data_scale`` and ``beta`` become inputs of each recording.
    """

    def __init__(self, loss: Callable[[torch.Tensor], torch.Tensor], scaler: SiteScale):
        self.loss = loss
        self.scaler = scaler
        self.recordings: dict[tuple, torch.fx.GraphModule] = {}
        # recordings to compare with the Python loss again at their next replay
        self.to_verify: set[tuple] = set()
        self.rerecorded = 0  # recordings replaced because the Python loss had changed
        # 0-dim tensors of the scales, by (value, dtype, device): made once, not per step
        self.scale_tensors: dict[tuple, torch.Tensor] = {}

    def _scale(self, value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``value`` as a 0-dim tensor, made the first time it is asked for and reused
        after. A step's scales take a few values per epoch (N/B for full batches and for
        the last one, one warm-up weight), and ``torch.tensor(value, device="cuda")``
        would copy from host memory on every step, which waits for the device's queue:
        the next step could no longer be launched while the device runs this one.
        ``torch.full`` passes the value to a fill kernel instead of copying it."""
        key = (float(value), dtype, device)
        tensor = self.scale_tensors.get(key)
        if tensor is None:
            if len(self.scale_tensors) >= 64:  # a warm-up adds one weight per epoch
                self.scale_tensors.clear()
            tensor = torch.full((), float(value), dtype=dtype, device=device)
            self.scale_tensors[key] = tensor
        return tensor

    def verify_again(self) -> None:
        """Compare each recording with the Python loss once more at its next replay (fit
        calls this at every epoch's start). A recording that no longer reproduces the
        Python loss, because Python state the pair reads has changed since it was made
        (an attribute annealed from outside, a counter the model keeps), is made again,
        so that state is frozen for one epoch at most, not for the rest of training."""
        self.to_verify = set(self.recordings)

    def __call__(
        self, params: list[torch.Tensor], x: torch.Tensor, data_scale: float, beta: float
    ) -> torch.Tensor:
        scales = (
            self._scale(data_scale, params[0].dtype, x.device),
            self._scale(beta, params[0].dtype, x.device),
        )
        return self._recording_for(params, x, scales)(*params, x, *scales)

    def value(self, params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The unscaled loss of ``x`` (data scale 1, beta 1: minus the ELBO summed over
        its rows) from its recording, replayed without gradients; recorded first where
        this batch shape has none (recording consumes no random draws). The replay draws
        from torch's generator as the Python loss would, so the figure is the one the
        Python loss gives from the same draws."""
        one = self._scale(1.0, params[0].dtype, x.device)
        with torch.enable_grad():  # a recording's check compares gradients
            recording = self._recording_for(params, x, (one, one))
        with _without_gradients():
            return recording(*params, x, one, one)

    def _recording_for(self, params, x, scales) -> torch.fx.GraphModule:
        """The recording for ``x``'s batch shape: made (and checked) if there is none or
        if the one there no longer reproduces the Python loss. No random draw is
        consumed."""
        key = (tuple(x.shape), x.dtype, x.device, len(params))
        recording = self.recordings.get(key)
        devices = [x.device] if x.device.type == "cuda" else []
        if key in self.to_verify:
            self.to_verify.discard(key)
            if not self._still_reproduces(recording, params, x, scales, devices):
                recording = None
                del self.recordings[key]
                self.rerecorded += 1
                logger.warning(
                    "jit: the recorded loss no longer reproduces the Python loss (Python "
                    "state the pair reads has changed since it was recorded); recording it "
                    "again"
                )
        if recording is None:
            # recording and checking run the loss: give their random draws back
            with torch.random.fork_rng(devices=devices):
                recording = self._record(params, x, scales)
                self._check(recording, params, x, scales, devices)
            self.recordings[key] = recording
        return recording

    def _record(self, params, x, scales) -> torch.fx.GraphModule:
        count = len(params)

        def replayable(*inputs):
            batch, self.scaler.data_scale, self.scaler.beta = inputs[count:]
            return self.loss(batch)

        try:
            with _scales_restored(self.scaler):
                recording = make_fx(replayable, pre_dispatch=True)(*params, x, *scales)
        # any failure: jit="auto" then runs Python, which raises the pair's own errors
        except Exception as error:
            if "data-dependent" not in str(error) and "_local_scalar_dense" not in str(error):
                raise PyrovaeError(
                    f"jit=True could not record this pair's loss ({type(error).__name__}: "
                    f"{str(error).splitlines()[0] if str(error) else ''}); train it with "
                    "jit=False"
                ) from error
            raise PyrovaeError(
                "jit=True cannot record this pair's loss: it reads a tensor's value in Python "
                "(data-dependent control flow such as `if tensor:`, .item(), or a NaN check "
                "inside the model, the guide or the objective), which a recording would "
                "freeze. Train it with jit=False, or move that decision out of "
                f"the model. PyTorch said: {str(error).splitlines()[0]}"
            ) from error
        return drop_identities(recording)

    def _still_reproduces(self, recording, params, x, scales, devices) -> bool:
        """Whether ``recording`` gives the Python loss's value on this batch from the same
        random draws: forward passes only, without gradients, and the draws given back."""
        with _scales_restored(self.scaler), torch.no_grad():
            self.scaler.data_scale, self.scaler.beta = (float(s) for s in scales)
            with torch.random.fork_rng(devices=devices):
                python = self.loss(x)
            with torch.random.fork_rng(devices=devices), _without_gradients():
                replayed = recording(*params, x, *scales)
        return _agrees(replayed, python, equal_nan=True)

    def _check(self, recording, params, x, scales, devices) -> None:
        """Refuse a recording whose loss or gradients differ from the Python loss's on
        this batch from the same random draws: what a recording cannot replay (a custom
        ``torch.autograd.Function``, whose backward the recording does not keep, unlike a
        ``torch.library.custom_op``'s; Python state read between the draws) shows up here,
        before any training step."""
        # the replay below must make the draws the Python loss made
        with _scales_restored(self.scaler), torch.random.fork_rng(devices=devices):
            self.scaler.data_scale, self.scaler.beta = (float(s) for s in scales)
            python = self.loss(x)
        used = [p for p in params if p.requires_grad]
        try:
            replayed = recording(*params, x, *scales)
            replayed_gradients = torch.autograd.grad(replayed, used, allow_unused=True)
        except RuntimeError as error:  # e.g. a draw whose gradient a custom Function supplied
            raise PyrovaeError(
                "jit=True: the recorded loss cannot be differentiated as the Python loss is "
                f"({str(error).splitlines()[0]}): a custom torch.autograd.Function's backward "
                "is not kept by a recording (torch's Dirichlet, Beta and Gamma draws have "
                "one; pyrovae.distributions.Dirichlet draws the same values as a custom "
                f"operator that records). {_HOW_TO_RECORD_A_FUNCTION}"
            ) from error
        pairs = [(replayed.detach(), python.detach(), "the loss")]
        python_gradients = torch.autograd.grad(python, used, allow_unused=True)
        for index, (a, b) in enumerate(zip(replayed_gradients, python_gradients, strict=True)):
            # a parameter without a gradient counts as zeros
            what = f"the gradient of parameter {index}"
            pairs.append((_or_zeros(a, used[index]), _or_zeros(b, used[index]), what))
        for a, b, what in pairs:
            if not _agrees(a, b):
                difference = float((a - b).abs().max())
                raise PyrovaeError(
                    f"jit=True: the recorded loss does not reproduce the Python loss here "
                    f"({what} differs by up to {difference:.3g} from the same draws). The pair "
                    "holds something a recording cannot replay: a custom "
                    "torch.autograd.Function (its backward is not kept), or Python state "
                    f"that changes between calls. {_HOW_TO_RECORD_A_FUNCTION}"
                )


_HOW_TO_RECORD_A_FUNCTION = (
    "Train it with jit=False, or make the Function a custom operator "
    "(torch.library.custom_op with register_autograd, as pyrovae.distributions does for "
    "the von Mises-Fisher and Dirichlet draws): a recording keeps such an operator whole, "
    "backward included"
)


def _without_gradients() -> contextlib.AbstractContextManager:
    """The mode a recording replays in when no gradient is wanted. Not ``torch.no_grad``:
    a recording made with gradients keeps the ``enable_grad`` blocks of the loss as
    "gradients on", and their exits as "back to on" (what the mode was then); torch's
    lazy properties (``Categorical.probs``, which the mixture guide's draw reads) open
    such a block. Under ``no_grad`` the replay would record autograd history from there on
    (memory, and a loss that requires grad); inference mode ignores the grad switch, and
    restores the caller's grad mode on exit."""
    return torch.inference_mode()


@contextlib.contextmanager
def _scales_restored(scaler: SiteScale) -> Iterator[None]:
    """Give ``scaler`` back its data scale and beta on exit (recording and checking set
    them to a recording's inputs)."""
    saved = scaler.data_scale, scaler.beta
    try:
        yield
    finally:
        scaler.data_scale, scaler.beta = saved


def _agrees(replayed: torch.Tensor, python: torch.Tensor, equal_nan: bool = False) -> bool:
    """Whether a replayed value equals the Python one up to float rounding: relative
    error 1e-4, absolute 1e-4 of the largest Python entry (at least 1); non-finite entries
    only equal themselves (NaN only with ``equal_nan``)."""
    tolerance = 1e-4 * max(1.0, float(python.abs().max()))
    return bool(torch.allclose(replayed, python, rtol=1e-4, atol=tolerance, equal_nan=equal_nan))


def _or_zeros(gradient: torch.Tensor | None, param: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(param) if gradient is None else gradient


_ATEN = torch.ops.aten
_SAME_SHAPE_IDENTITIES = (_ATEN.expand.default, _ATEN.reshape.default, _ATEN.view.default)


def drop_identities(recording: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Remove the operations of a recording that return their input unchanged: ``x * 1``,
    ``x / 1``, ``x + 0``, ``x - 0``, and ``expand``/``reshape``/``view``/``broadcast_tensors``
    to the shape ``x`` already has (where Pyro's handlers multiply by a unit scale, add to a
    0.0 accumulator or broadcast a site to its own shape). Each would cost an autograd node
    forward and backward on every replay. An operation stays when its result's dtype,
    shape or device differs from ``x``'s, or when an in-place operation writes to its result
    (it must not write to ``x`` instead). Then dead operations go (random draws are impure:
    they stay, so a replay consumes torch's generator as the Python loss does)."""
    graph = recording.graph
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        source = _identity_source(node)
        if source is not None and not _written_in_place(node):
            node.replace_all_uses_with(source)
    graph.eliminate_dead_code()
    graph.lint()
    recording.recompile()
    return recording


def _identity_source(node: torch.fx.Node) -> torch.fx.Node | None:
    """The node whose value ``node`` returns unchanged, or None."""
    target, args = node.target, node.args
    if target in _SAME_SHAPE_IDENTITIES:
        candidate = args[0]
    elif target in (_ATEN.mul.Tensor, _ATEN.div.Tensor, _ATEN.add.Tensor, _ATEN.sub.Tensor):
        if len(args) != 2 or node.kwargs:
            return None
        neutral = 1 if target in (_ATEN.mul.Tensor, _ATEN.div.Tensor) else 0
        if _is_number(args[1], neutral):
            candidate = args[0]
        elif target in (_ATEN.mul.Tensor, _ATEN.add.Tensor) and _is_number(args[0], neutral):
            candidate = args[1]
        else:
            return None
    elif target is operator.getitem and getattr(args[0], "target", None) is (
        _ATEN.broadcast_tensors.default
    ):
        candidate = args[0].args[0][args[1]]
    else:
        return None
    if not isinstance(candidate, torch.fx.Node):
        return None
    before, after = candidate.meta.get("val"), node.meta.get("val")
    same = (
        isinstance(before, torch.Tensor)
        and isinstance(after, torch.Tensor)
        and before.shape == after.shape
        and before.dtype == after.dtype
        and before.device == after.device
    )
    return candidate if same else None


def _is_number(value, number: int) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == number


def _written_in_place(node: torch.fx.Node) -> bool:
    return any(
        isinstance(user.target, torch._ops.OpOverload) and user.target._schema.is_mutable
        for user in node.users
    )
