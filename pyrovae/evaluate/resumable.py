"""The importance-weighted log p(x) of many data points, in saved blocks that survive an
interruption.

At S = 5,000 the published protocol's test log-likelihood (10,000 images) takes hours on a
CPU: 1.16 s per image for a VampPrior with full-covariance posteriors on one thread, 3.2
hours in all. :func:`resumable_log_likelihood` computes the same estimate as
:func:`~pyrovae.evaluate.log_likelihood` and, every ``save_every`` batches, writes the
values so far with the state of every random number generator (atomically, checksummed:
:func:`~pyrovae.train.checkpoint.write_atomic`). Called again with the same file it
continues after the last saved block, so an interrupted evaluation ends with the values
an uninterrupted one would have given, bit for bit on the same device. A file written for
other data, other parameters or other settings is refused, not silently mixed in.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pyro
import torch

from pyrovae.data import check_data
from pyrovae.denormals import flushed_denormals
from pyrovae.errors import PyrovaeError
from pyrovae.time_limit import check_time_limit, next_unit_ends_late
from pyrovae.train.checkpoint import read_record, rng_state, set_rng_state, write_atomic

from .estimators import rows_log_likelihood
from .importance import check_sample_chunk, enumerated_guide_sites

PROGRESS_FORMAT = "pyrovae-log-likelihood-progress-v1"
logger = logging.getLogger(__name__)


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the names, dtypes, shapes and bytes of ``tensors`` (in name order): equal
    exactly when every tensor is, wherever the tensors live."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def parameters_digest(model: Callable, guide: Callable) -> str:
    """A digest of what the pair computes with: the ``state_dict`` (parameters and buffers)
    of each side that is an ``nn.Module``; for a side that is a plain function, every
    tensor in Pyro's param store (where its ``pyro.param`` values live)."""
    tensors = {}
    for label, side in (("model", model), ("guide", guide)):
        if isinstance(side, torch.nn.Module):
            tensors.update({f"{label}/{k}": v for k, v in side.state_dict().items()})
        else:
            store = pyro.get_param_store()
            tensors.update({f"store/{name}": store[name] for name in store.keys()})
    return tensors_digest(tensors)


def read_progress(path: str | os.PathLike) -> dict:
    """The record a :func:`resumable_log_likelihood` call saved at ``path``: ``values``, the
    per-row log p(x) done so far, shape ``(k,)`` nats, with the ``settings`` they were drawn
    under; checked as :func:`~pyrovae.train.checkpoint.read_record` checks a checkpoint."""
    return read_record(path, PROGRESS_FORMAT, "log-likelihood progress file", "evaluate again")


@torch.no_grad()
def resumable_log_likelihood(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    path: str | os.PathLike,
    num_samples: int = 5000,
    batch_size: int = 100,
    sample_chunk: int | None = None,
    save_every: int = 1,
    time_limit: float | None = None,
) -> torch.Tensor:
    """:func:`~pyrovae.evaluate.log_likelihood` of the rows of ``x``, shape ``(N,)``, nats,
    saved to ``path`` after every ``save_every`` batches of ``batch_size`` rows and
    continued from there when ``path`` already holds part of it.

    With ``time_limit`` (seconds) the call stops after a saved block when one more block,
    at the pace of this call's blocks, would end past the limit (the first block always
    runs), and returns the values of the rows done so far: shape ``(k,)`` with k < N,
    the first k rows. Calling again continues.

    Without an interruption the values equal ``log_likelihood(model, guide, x,
    num_samples, batch_size, sample_chunk)`` called with the same random state (each block
    holds whole batches, so it draws what the single call draws). The file records
    digests of ``x`` and of the pair's parameters and the settings that change the draws
    (``num_samples``, ``batch_size``); a file that disagrees raises :class:`PyrovaeError`
    naming what differs. Once every row is done the file stays, and a further call reads
    the values back without drawing anything.
    """
    check_data(x, "x")
    check_sample_chunk(sample_chunk)
    for name, value in (("num_samples", num_samples), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PyrovaeError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1:
        raise PyrovaeError(f"save_every must be a positive integer (batches), got {save_every!r}")
    check_time_limit(time_limit)
    started = time.perf_counter()
    path = Path(path)
    if path.is_dir():
        raise PyrovaeError(f"path={path} is a folder; name a file in it")
    settings = {
        "num_samples": num_samples,
        "batch_size": batch_size,
        "points": int(x.shape[0]),
        "data": tensors_digest({"x": x}),
        "parameters": parameters_digest(model, guide),
    }
    values, done, record = [], 0, None
    if path.exists():
        record = read_progress(path)
        _check_settings(record["settings"], settings, path)
        values = [record["values"].to(x.device)]
        done = int(record["values"].shape[0])
        if done == x.shape[0]:  # finished: read back, the caller's random state left alone
            return values[0]
    with flushed_denormals(x.device):
        # as log_likelihood does first (it draws from the guide); the random state saved
        # with each block is the state after it
        enumerated = bool(enumerated_guide_sites(guide, x))
        if record is not None:
            set_rng_state(record["rng"])
            logger.info("log p(x): continuing %s after %d of %d points", path, done, len(x))
        rows_per_block = batch_size * save_every
        block_seconds = []
        while done < x.shape[0]:
            if next_unit_ends_late(time_limit, started, block_seconds):
                logger.info(
                    "log p(x): stopping after %d of %d points at time_limit=%g s; call again "
                    "to continue",
                    done,
                    len(x),
                    time_limit,
                )
                break
            block_began = time.perf_counter()
            block = x[done : done + rows_per_block]
            values.append(
                rows_log_likelihood(
                    model, guide, block, num_samples, batch_size, sample_chunk, enumerated
                )
            )
            done += block.shape[0]
            so_far = torch.cat(values)
            write_atomic(
                {
                    "format": PROGRESS_FORMAT,
                    "settings": settings,
                    "values": so_far.cpu(),
                    "rng": rng_state(),
                },
                path,
            )
            logger.info(
                "log p(x): %d of %d points, mean so far %.4f nats", done, len(x), so_far.mean()
            )
            block_seconds.append(time.perf_counter() - block_began)
    return torch.cat(values) if values else x.new_zeros((0,))


def _check_settings(saved: dict, current: dict, path: Path) -> None:
    differing = [name for name in current if saved.get(name) != current[name]]
    if not differing:
        return
    described = {
        "data": "other data points",
        "parameters": "other parameters (a different or further-trained pair)",
    }
    parts = [
        described.get(name, f"{name}={saved.get(name)!r} (now {current[name]!r})")
        for name in differing
    ]
    raise PyrovaeError(
        f"{path} holds log p(x) values computed for {'; '.join(parts)}. Delete it to start "
        "over, or pass another path"
    )
