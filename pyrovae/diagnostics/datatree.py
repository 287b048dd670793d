"""Guide draws and importance ratios as an ArviZ DataTree (arviz_base's DataTree API).

Groups (S iid guide draws stored as chain = 1, draw = S):

- ``posterior``: ``z`` (chain, draw, obs, z_dim), draws from q(z | x_obs);
- ``sample_stats``: ``log_ratio`` (chain, draw, obs) = log p(x, z) - log q(z | x), nats;
  ``log_q`` (chain, draw, obs) = log q(z | x); ``log_joint`` = log p(x, z);
- ``log_likelihood``: ``x`` (chain, draw, obs) = log p(x_obs | z);
- ``observed_data``: ``x`` (obs, feature).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import arviz_base
import numpy as np
import torch
import xarray as xr

from pyrovae.evaluate.importance import site_log_probs

NETCDF_ENGINE = "h5netcdf"


@torch.no_grad()
def to_datatree(
    model: Callable, guide: Callable, x: torch.Tensor, num_samples: int = 1000, name: str = ""
) -> xr.DataTree:
    """Draw ``num_samples`` z ~ q(z | x_n) per row of ``x`` and record the log densities."""
    parts = site_log_probs(model, guide, x, num_samples)
    if len(parts.latents) != 1:
        raise ValueError(f"to_datatree needs one latent site, got {sorted(parts.latents)}")
    (z,) = parts.latents.values()
    as_np = lambda t: t.detach().cpu().double().numpy()[None]  # noqa: E731  add chain dim
    tree = arviz_base.from_dict(
        {
            "posterior": {"z": as_np(z)},
            "sample_stats": {
                "log_ratio": as_np(parts.log_weights),
                "log_q": as_np(parts.log_guide),
                "log_joint": as_np(parts.log_joint),
            },
            "log_likelihood": {"x": as_np(parts.log_likelihood)},
        },
        dims={
            "z": ["obs", "z_dim"],
            "log_ratio": ["obs"],
            "log_q": ["obs"],
            "log_joint": ["obs"],
            "x": ["obs"],
        },
    )
    tree.attrs["guide"] = name
    observed = xr.Dataset({"x": (("obs", "feature"), x.detach().cpu().double().numpy())})
    tree["observed_data"] = xr.DataTree(observed)
    return tree


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
        raise ValueError(f"cannot read {path} as a pyrovae DataTree: {error}") from error
