"""Pareto-smoothed importance sampling diagnostics per data point (Yao et al. 2018).

For each data point n, the log ratios log w_ns = log p(x_n, z_s) - log q(z_s | x_n) with
z_s ~ q(z | x_n) are Pareto-smoothed; the fitted tail shape k-hat says whether importance
sampling from the guide is reliable for that point (and how far q is from the true
posterior): good below ``khat_threshold(S)`` = min(1 - 1/log10 S, 0.7).

Convention pinned by a test: ``arviz_stats``' ``psislw`` smooths exp(-ary) (its ``loo``
passes log-likelihoods), so it receives the NEGATED log ratios.
"""

from __future__ import annotations

import math

import numpy as np
from arviz_stats.base import array_stats

from pyrovae.errors import PyrovaeError

MIN_PSIS_SAMPLES = 25  # the tail, min(S/5, 3 sqrt(S)) draws, must hold at least 5
CONSTANT_SPREAD = 1e-4  # nats: ratios this flat mean q is the posterior to within 0.01 %


def psis(log_ratios: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smooth log ratios of shape ``(S, N)``.

    Returns (normalised smoothed log weights ``(S, N)``, k-hat ``(N,)``). A data point
    whose ratios are constant to within ``CONSTANT_SPREAD`` (q is its exact posterior) has
    no tail to fit; it gets k-hat = 0 and equal weights.
    """
    log_ratios = np.asarray(log_ratios, dtype=np.float64)
    if log_ratios.ndim == 1:
        log_ratios = log_ratios[:, None]
    if not np.isfinite(log_ratios).all():
        raise PyrovaeError("log ratios contain NaN or Inf; check the model and guide densities")
    num_samples, num_points = log_ratios.shape
    if num_samples < MIN_PSIS_SAMPLES:
        raise PyrovaeError(
            f"PSIS needs at least {MIN_PSIS_SAMPLES} draws per data point (its Pareto tail "
            f"is the largest min(S/5, 3 sqrt S) of them, at least 5); got S = {num_samples}"
        )
    khat = np.zeros(num_points)
    smoothed = np.full(log_ratios.shape, -math.log(num_samples))
    varies = np.ptp(log_ratios, axis=0) > CONSTANT_SPREAD
    if varies.any():
        lw, k = array_stats.psislw(-log_ratios[:, varies].T, r_eff=1.0)
        smoothed[:, varies] = np.asarray(lw).T
        khat[varies] = k
    return smoothed, khat


def psis_khat(log_ratios: np.ndarray) -> np.ndarray:
    """Pareto k-hat per data point, shape ``(N,)``."""
    return psis(log_ratios)[1]


def importance_ess(log_ratios: np.ndarray) -> np.ndarray:
    """Kish effective sample size (sum w)^2 / sum w^2 of the raw weights, per data point,
    shape ``(N,)``; between 1 and S."""
    log_ratios = np.asarray(log_ratios, dtype=np.float64).reshape(log_ratios.shape[0], -1)
    shifted = log_ratios - log_ratios.max(0, keepdims=True)
    w = np.exp(shifted)
    return w.sum(0) ** 2 / (w**2).sum(0)


def khat_threshold(num_samples: int) -> float:
    """min(1 - 1/log10 S, 0.7): the k-hat below which PSIS is reliable with S draws."""
    return min(1 - 1 / math.log10(num_samples), 0.7)


def summarize(khat: np.ndarray, ess: np.ndarray, num_samples: int) -> dict[str, float]:
    """Median k-hat, the one threshold used everywhere (``khat_threshold(S)``) and the share
    of points above it, median ESS; from the per-point ``psis_khat`` and ``importance_ess``
    of S draws."""
    threshold = khat_threshold(num_samples)
    return {
        "khat median": float(np.median(khat)),
        "khat threshold": threshold,
        "share khat > threshold": float(np.mean(khat > threshold)),
        "ESS median": float(np.median(ess)),
    }
