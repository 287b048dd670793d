"""Rank guides with ``arviz_stats.compare`` on held-out test log-likelihoods.

For an amortized VAE each data point has its own latent z_n, so the leave-one-out
predictive density of x_n is its marginal likelihood p(x_n) under the trained decoder;
we estimate it per test image by importance sampling (``evaluate.log_likelihood``) and
hand the pointwise values to ArviZ as ``ELPDData``:

    elpd = sum_n log p(x_n),   se = sqrt(N) sd_n(log p(x_n))

``compare`` then gives ``elpd_diff`` with ``dse``, the standard error of the PAIRED
difference (the same test images under two guides), which is what tells whether one guide
beats another beyond noise, and stacking weights. ``pareto_k`` carries each image's PSIS
k-hat of the importance weights behind its estimate.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import arviz_stats
import numpy as np
import xarray as xr
from arviz_stats.utils import ELPDData

from pyrovae.errors import PyrovaeError

from .psis import khat_threshold


def elpd_data(
    log_px, pareto_k=None, num_samples: int = 5000, good_k: float | None = None
) -> ELPDData:
    """``ELPDData`` for per-image test log-likelihoods ``log_px`` of shape ``(N,)``;
    ``good_k`` defaults to the library's one threshold, ``khat_threshold(num_samples)``."""
    if good_k is None:
        good_k = khat_threshold(num_samples)
    values = np.asarray(log_px, dtype=np.float64).reshape(-1)
    if not np.isfinite(values).all():
        raise PyrovaeError("log p(x) values contain NaN or Inf")
    n = values.size
    khat = None if pareto_k is None else xr.DataArray(np.asarray(pareto_k), dims=["obs"])
    return ELPDData(
        kind="loo",
        elpd=float(values.sum()),
        se=float(math.sqrt(n) * values.std(ddof=1)),
        p=0.0,
        n_samples=num_samples,
        n_data_points=n,
        scale="log",
        warning=bool(khat is not None and (khat > good_k).any()),
        good_k=good_k,
        elpd_i=xr.DataArray(values, dims=["obs"]),
        pareto_k=khat,
    )


def compare_guides(log_px: Mapping[str, np.ndarray], num_samples: int = 5000):
    """ArviZ comparison table (a pandas DataFrame) of guides, best first: ``elpd``,
    ``elpd_diff``, ``dse`` (paired SE of the difference), stacking ``weight`` (nats,
    summed over the N test images)."""
    if len({np.asarray(v).size for v in log_px.values()}) != 1:
        raise PyrovaeError("every guide must be evaluated on the same test images")
    elpds = {name: elpd_data(values, num_samples=num_samples) for name, values in log_px.items()}
    with warnings.catch_warnings():
        # arviz_stats 0.8 calls sort_values(inplace=True), which pandas >= 3.1 deprecates.
        warnings.filterwarnings("ignore", message="The inplace keyword in DataFrame.sort_values")
        return arviz_stats.compare(elpds)
