"""Checkpoints: the state of a run (pair, optimizer, RNG, history) written atomically and
read back safely.

File layout (format v2)::

    b"pyrovae-checkpoint-v2\n" + sha256(payload) as 64 hex digits + b"\n" + payload

where ``payload`` is ``torch.save`` of a dict of tensors and plain Python values (RNG states
included: no numpy arrays). Loading checks the tag and the SHA-256 (so a flipped byte is
refused, which ``torch.load`` alone does not notice) and unpickles with
``weights_only=True``, so a file cannot run code. Writes go to ``<path>.tmp``, are flushed
and fsynced, then renamed over ``path`` and the folder is fsynced: a crash never leaves a
half-written checkpoint."""

from __future__ import annotations

import copy
import hashlib
import io
import os
import random
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_FORMAT = "pyrovae-checkpoint-v2"
MAGIC = CHECKPOINT_FORMAT.encode() + b"\n"
DIGEST_BYTES = 64  # hex SHA-256
REQUIRED_KEYS = (
    "format",
    "epoch",
    "model",
    "guide",
    "params",
    "optimizer",
    "rng",
    "history",
    "best_value",
    "bad_epochs",
    "best_state",
)


def _state(obj) -> dict:
    """Trainable state of a model or guide: its state_dict if it is an nn.Module."""
    return copy.deepcopy(obj.state_dict()) if isinstance(obj, torch.nn.Module) else {}


def _load_state(obj, state: dict) -> None:
    if isinstance(obj, torch.nn.Module):
        obj.load_state_dict(state)


def _copy_params(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Detached copies of the optimised tensors (covers pairs that are not nn.Modules)."""
    return [p.detach().clone() for p in params]


def _rng_state() -> dict:
    """Every RNG's state as tensors and plain Python values (loadable with weights_only)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_atomic(obj: dict, path: Path) -> None:
    """Write ``obj`` in the checksummed format, atomically (see the module docstring)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(MAGIC + digest + b"\n" + payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by ``fit``; ``ValueError`` saying what is wrong if it is
    missing, damaged (checksum), foreign, from an older format, or lacks a field."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist (or is not a file)")
    raw = path.read_bytes()
    header = len(MAGIC) + DIGEST_BYTES + 1
    if not raw.startswith(MAGIC) or len(raw) < header or raw[header - 1 : header] != b"\n":
        older = raw.startswith(b"PK") or raw[:2] == b"\x80\x02"
        hint = (
            "it looks like a torch file from an older pyrovae, which cannot be loaded without "
            "allowing it to run code; train again"
            if older
            else "it is not a pyrovae checkpoint"
        )
        raise ValueError(f"{path} has no '{CHECKPOINT_FORMAT}' header: {hint}")
    digest = raw[len(MAGIC) : len(MAGIC) + DIGEST_BYTES]
    payload = raw[header:]
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise ValueError(
            f"checkpoint {path} is damaged (its SHA-256 does not match the one written with "
            "it); delete it and train again, or resume from another copy"
        )
    try:
        ckpt = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types; weights_only refuses code
        raise ValueError(
            f"checkpoint {path} cannot be read safely ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); it was not written by fit"
        ) from error
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a pyrovae checkpoint (no '{CHECKPOINT_FORMAT}' tag)")
    missing = [key for key in REQUIRED_KEYS if key not in ckpt]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {missing}; it is incomplete, train again")
    return ckpt


def _move(obj, device: str) -> None:
    if isinstance(obj, torch.nn.Module):
        obj.to(device)
