"""Smooth maps from a network's raw output onto bounded ranges: the scales of guide heads
and of conditional priors such as the HVAE's p(z1 | z2).

A scale is ``softplus(x) + min_value``, which is never below ``min_value``. With a ceiling
``max_value`` the softplus input is first bounded above, smoothly,

    x -> c - softplus(c - x),    c = softplus^{-1}(max_value - min_value),

which is about x well below c and never exceeds c (it stays below it in exact arithmetic;
float32 rounds it to c for x > c + 17), so the scale stays within ``[min_value,
max_value]`` and keeps a gradient wherever it is not rounded to its ceiling (the
published VampPrior code clips each log-variance to [-6, 2] with ``Hardtanh``, a scale
in [0.0498, 2.718], whose gradient is zero outside). The floor stays exact: for x -> -inf
the bound leaves x as it is and softplus(x) -> 0.
"""

from __future__ import annotations

import math

import torch
from torch.nn.functional import softplus

from pyrovae.errors import PyrovaeError

MAX_RAW = 15.0  # the default soft clamp of raw outputs: scales up to ~15 above the floor


def soft_clamp(x: torch.Tensor, bound: float) -> torch.Tensor:
    """``bound * tanh(x / bound)``: identity near 0, smooth, never leaves (-bound, bound)."""
    return bound * torch.tanh(x / bound)


def inverse_softplus(y: float) -> float:
    """The x with ``softplus(x) = y`` (y > 0)."""
    return y + math.log(-math.expm1(-y))


def soft_upper_bound(x: torch.Tensor, ceiling: float) -> torch.Tensor:
    """``ceiling - softplus(ceiling - x)``: about x well below ``ceiling``, smooth,
    increasing, never above ``ceiling``."""
    return ceiling - softplus(ceiling - x)


def positive(
    raw: torch.Tensor,
    min_value: float,
    bound: float | None = MAX_RAW,
    max_value: float = math.inf,
) -> torch.Tensor:
    """``softplus(soft_clamp(raw, bound)) + min_value``, in ``[min_value, ~bound +
    min_value]`` (``bound=None``: no clamp, unbounded above); with a finite ``max_value``
    the softplus input is bounded smoothly from above so the result never exceeds
    ``max_value`` (module docstring)."""
    x = raw if bound is None else soft_clamp(raw, bound)
    if max_value < math.inf:
        x = soft_upper_bound(x, inverse_softplus(max_value - min_value))
    return softplus(x) + min_value


def check_scale_range(min_scale: float, max_scale: float, what: str = "min_scale") -> None:
    """A clear error unless ``0 <= min_scale < max_scale`` (``max_scale`` may be inf)."""
    if not min_scale >= 0:
        raise PyrovaeError(f"{what} must be >= 0, got {min_scale}")
    if not max_scale > min_scale:
        raise PyrovaeError(
            f"max_scale must be above {what} ({min_scale}), got {max_scale}; use inf for no "
            "ceiling (the published VampPrior protocol uses e = 2.718, a log-variance of 2)"
        )
