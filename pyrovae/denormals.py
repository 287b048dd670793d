"""Subnormal floats on the CPU, and the context in which ``fit`` flushes them to zero.

A float32 below 1.2e-38 in magnitude is subnormal; x86 CPUs compute with such numbers
many times more slowly than with normal ones. Training a mixture prior makes them in
bulk: the gradient of ``log sum_k pi_k p_k(z)`` weights component k by its responsibility
for z, and for a trained 500-component VampPrior most responsibilities are astronomically
small (on the Fashion-MNIST protocol after 32 epochs, 6 % of them were subnormal). Their
gradients are far below anything Adam can act on (its epsilon is 1e-8), so ``fit`` and
``evaluate.log_likelihood`` flush them to zero on the CPU (``torch.set_flush_denormal``),
as TensorFlow does by default. ``benchmarks/vamp_prior.py`` times a VampPrior step with
and without it. GPUs compute with subnormals at full speed and are left as they are.

Flushing does not help ``exp`` itself: on the CPU, torch's ``exp`` of an argument whose
result is not a normal float (below -87.3 in float32) takes tens to hundreds of times as
long as of any other, flushed or not. A mixture's ``logsumexp`` over K components is made
of such terms: exp(log p_k(z) - max_k log p_k(z)) for every component far from z.
:func:`logsumexp` leaves them out.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch

# float32 subnormal: below the smallest normal number, 1.1755e-38
_SUBNORMAL = 1e-40


def denormals_flushed() -> bool:
    """Whether CPU arithmetic in this thread now flushes subnormal floats to zero (probed:
    a subnormal times one reads back as zero exactly when it does)."""
    return (torch.tensor(_SUBNORMAL, dtype=torch.float32) * 1.0).item() == 0.0


@contextmanager
def flushed_denormals(device: str | torch.device = "cpu") -> Iterator[None]:
    """Within the block, CPU arithmetic treats subnormal floats as zero; on exit the mode
    found on entry is restored. Nothing changes for other devices, where the mode is
    already on, or where the CPU cannot flush (``torch.set_flush_denormal`` says so)."""
    if torch.device(device).type != "cpu" or denormals_flushed():
        yield
        return
    switched = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if switched:
            torch.set_flush_denormal(False)


def logsumexp(value: torch.Tensor, dim: int) -> torch.Tensor:
    """``log sum_i exp(value_i)`` along ``dim`` (removed), as ``torch.logsumexp``, with
    each term whose exp(value_i - max) would be below the smallest normal float times e
    (e^-86.3 in float32, e^-707 in float64) taken as zero, its gradient too. That is what
    flushing subnormals makes of most of them anyway; the value moves by at most n times
    that bound relative (1.6e-35 for n = 500 float32 terms), and its gradient by as
    little. Rows of -inf give -inf, +inf gives +inf and NaN gives NaN, as torch's.

    Why: the terms left out are exactly those whose ``exp`` is slow on the CPU (module
    docstring); torch's backward computes them a second time. Of the Fashion-MNIST
    protocol's trained VampPriors' K = 500 terms per z, about half were such in an
    exploratory count (52 % over diagonal posteriors, 38 % over full-covariance ones);
    the evaluation of ``vamp+diagonal`` runs 1.12 times as fast with this
    (``docs/results.md``). Other dtypes, whose smallest normal float is not negligible
    next to their precision, get ``torch.logsumexp``, as do other devices than the CPU,
    where such an ``exp`` costs nothing more and each extra pass is a kernel launch."""
    if (
        value.device.type != "cpu"
        or value.dtype not in (torch.float32, torch.float64)
        or value.shape[dim] == 0
    ):
        return torch.logsumexp(value, dim)
    floor = math.log(torch.finfo(value.dtype).tiny) + 1.0
    peak = value.detach().amax(dim, keepdim=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    terms = value - peak
    left_out = terms < floor
    if torch.is_grad_enabled() and value.requires_grad:
        terms = terms.clamp(min=floor).exp().masked_fill(left_out, 0.0)
    else:  # nothing recorded: no copies
        terms.clamp_(min=floor).exp_().masked_fill_(left_out, 0.0)
    return terms.sum(dim).log() + peak.squeeze(dim)
