"""Guide draws and importance ratios as an ArviZ DataTree (arviz_base's DataTree API).

Groups (S iid guide draws stored as chain = 1, draw = S); variables are named after the
model's own sites (``z``, ``x`` in the examples below; ``z1``, ``z2``, ``y``, ... for other
pairs):

- ``posterior``: one variable per latent site, e.g. ``z`` (chain, draw, obs, z_dim), draws
  from q(z | x_obs);
- ``sample_stats``: ``log_ratio`` (chain, draw, obs) = log p(x, z) - log q(z | x), nats;
  ``log_q`` (chain, draw, obs) = log q(z | x); ``log_joint`` = log p(x, z);
- ``log_likelihood``: the observed site, e.g. ``x`` (chain, draw, obs) = log p(x_obs | z);
- ``observed_data``: the observed site, e.g. ``x`` (obs, feature).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import arviz_base
import numpy as np
import pyro
import torch
import xarray as xr

from pyrovae.checks import observed_sites, trace_pair
from pyrovae.errors import PyrovaeError
from pyrovae.evaluate.importance import site_log_probs

NETCDF_ENGINE = "h5netcdf"


@torch.no_grad()
def to_datatree(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    num_samples: int = 1000,
    name: str = "",
) -> xr.DataTree:
    """Draw ``num_samples`` z ~ q(z | x_n) per row of ``x`` and record the log densities."""
    name_attr = name
    parts = site_log_probs(model, guide, x, num_samples)
    observed = _observed_name(model, guide, x)
    as_np = lambda t: t.detach().cpu().double().numpy()[None]  # noqa: E731  add chain dim
    posterior, dims = {}, {"log_ratio": ["obs"], "log_q": ["obs"], "log_joint": ["obs"]}
    for name, value in parts.latents.items():
        posterior[name] = as_np(value)
        dims[name] = ["obs"] + [f"{name}_dim_{i}" for i in range(value.dim() - 2)]
        if value.dim() == 3:
            dims[name] = ["obs", f"{name}_dim"]
    dims[observed] = ["obs"]
    tree = arviz_base.from_dict(
        {
            "posterior": posterior,
            "sample_stats": {
                "log_ratio": as_np(parts.log_weights),
                "log_q": as_np(parts.log_guide),
                "log_joint": as_np(parts.log_joint),
            },
            "log_likelihood": {observed: as_np(parts.log_likelihood)},
        },
        dims=dims,
    )
    tree.attrs["guide"] = name_attr
    values = x.detach().cpu().double().numpy()
    tree["observed_data"] = xr.DataTree(xr.Dataset({observed: (("obs", "feature"), values)}))
    return tree


def _observed_name(model: Callable, guide: Callable, x: torch.Tensor) -> str:
    with pyro.validation_enabled(False):
        _, model_trace = trace_pair(model, guide, x[:2])
    names = observed_sites(model_trace)
    if len(names) != 1:
        raise PyrovaeError(f"to_datatree needs one observed site; the model has {names}")
    return names[0]


def log_ratios(tree: xr.DataTree) -> np.ndarray:
    """The log importance ratios as an array of shape ``(S, N)``."""
    return tree["sample_stats"]["log_ratio"].values.reshape(-1, tree["posterior"].sizes["obs"])


def save_datatree(tree: xr.DataTree, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree.to_netcdf(path, engine=NETCDF_ENGINE)
    return path


def open_datatree(path: str | Path) -> xr.DataTree:
    """Open a DataTree written by :func:`save_datatree` (a ``ValueError`` if unreadable)."""
    try:
        return xr.open_datatree(path, engine=NETCDF_ENGINE)
    except (OSError, ValueError) as error:
        raise PyrovaeError(f"cannot read {path} as a pyrovae DataTree: {error}") from error
