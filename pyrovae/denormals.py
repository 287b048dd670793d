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
"""

from __future__ import annotations

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
