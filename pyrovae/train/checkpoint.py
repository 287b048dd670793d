"""Checkpoints: the state of a run (pair, optimizer, RNG, history, early stopping and the
configuration that produced it) as one :class:`Checkpoint` record, written atomically and
read back safely in one place.

File layout (format v3)::

    b"pyrovae-checkpoint-v3\\n" + sha256(payload) as 64 hex digits + b"\\n" + payload

where ``payload`` is ``torch.save`` of a dict of tensors and plain Python values (RNG states
included: no numpy arrays). Loading checks the tag and the SHA-256 (so a flipped byte is
refused, which ``torch.load`` alone does not notice) and unpickles with
``weights_only=True``, so a file cannot run code. Writes go to ``<path>.tmp``, are flushed
and fsynced, then renamed over ``path`` and the folder is fsynced: a crash never leaves a
half-written checkpoint, and a ``.tmp`` left by a crash is removed by the next write."""

from __future__ import annotations

import copy
import hashlib
import io
import os
import random
from collections import OrderedDict
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from pyrovae.errors import PyrovaeError

CHECKPOINT_FORMAT = "pyrovae-checkpoint-v3"
MAGIC = CHECKPOINT_FORMAT.encode() + b"\n"
DIGEST_BYTES = 64  # hex SHA-256
_OLDER_MAGIC = b"pyrovae-checkpoint-v"


@dataclass
class Checkpoint:
    """Everything a run needs to continue exactly where it stopped.

    ``params`` maps each optimised Pyro parameter name to its unconstrained tensor (this
    covers pairs that are not ``nn.Module`` s); ``run`` holds the configuration that wrote
    it (``{"config": FitConfig dict, "spec": caller's description, "data": data summary}``)
    so a resume with different settings is refused by name."""

    epoch: int
    model: dict
    guide: dict
    params: dict[str, torch.Tensor]
    optimizer: dict
    rng: dict
    history: dict
    monitors: dict  # early stopping's state and the divergence monitor's best loss
    run: dict

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically in the checksummed format (see the module docstring)."""
        write_atomic({"format": CHECKPOINT_FORMAT, **asdict_shallow(self)}, Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Checkpoint:
        """Read a checkpoint; :class:`PyrovaeError` saying what is wrong if it is missing,
        damaged (checksum), foreign, from an older format, or lacks a field."""
        path = Path(path)
        record = read_record(
            path, CHECKPOINT_FORMAT, remedy="train again, or resume from another copy"
        )
        missing = [f.name for f in fields(cls) if f.name not in record]
        if missing:
            raise PyrovaeError(f"checkpoint {path} lacks {missing}; it is incomplete, train again")
        return cls(**{f.name: record[f.name] for f in fields(cls)})


def read_record(
    path: str | os.PathLike,
    record_format: str,
    label: str = "checkpoint",
    remedy: str = "train again",
) -> dict:
    """The dict written by :func:`write_atomic` with ``{"format": record_format, ...}``,
    read safely: its header and SHA-256 checked, unpickled with ``weights_only=True``.
    :class:`PyrovaeError` naming ``label`` and ``remedy`` when it is missing, damaged,
    foreign or of another format."""
    path = Path(path)
    payload = _verified_payload(path, label, remedy)
    try:
        record = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types; weights_only refuses code
        first = str(error).splitlines()[0] if str(error) else ""
        raise PyrovaeError(
            f"{label} {path} cannot be read safely ({type(error).__name__}: {first}); "
            f"it was not written by pyrovae: {remedy}"
        ) from error
    if not isinstance(record, dict) or record.get("format") != record_format:
        raise PyrovaeError(f"{path} is not a pyrovae {label} (no '{record_format}' tag): {remedy}")
    return record


def asdict_shallow(record: Checkpoint) -> dict:
    """The record's fields as a dict, tensors shared (``dataclasses.asdict`` deep-copies)."""
    return {f.name: getattr(record, f.name) for f in fields(record)}


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """:meth:`Checkpoint.load`."""
    return Checkpoint.load(path)


def _verified_payload(path: Path, label: str, remedy: str) -> bytes:
    """The pickled payload of ``path`` after its tag and SHA-256 are checked."""
    if not path.is_file():
        raise PyrovaeError(f"{label} {path} does not exist (or is not a file)")
    raw = path.read_bytes()
    header = len(MAGIC) + DIGEST_BYTES + 1
    if not raw.startswith(MAGIC) or len(raw) < header or raw[header - 1 : header] != b"\n":
        if raw.startswith(_OLDER_MAGIC):
            hint = f"it was written by an older pyrovae in another format; {remedy}"
        elif raw.startswith(b"PK") or raw[:2] == b"\x80\x02":
            hint = (
                "it looks like a plain torch file, which cannot be loaded without allowing it "
                f"to run code; {remedy}"
            )
        else:
            hint = f"it is not a pyrovae {label}"
        raise PyrovaeError(f"{path} has no '{CHECKPOINT_FORMAT}' header: {hint}")
    digest = raw[len(MAGIC) : len(MAGIC) + DIGEST_BYTES]
    payload = raw[header:]
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise PyrovaeError(
            f"{label} {path} is damaged (its SHA-256 does not match the one written with "
            f"it); delete it and {remedy}"
        )
    return payload


def temporary_path(path: Path) -> Path:
    """Where a checkpoint is written before it is renamed over ``path``."""
    return path.with_suffix(path.suffix + ".tmp")


def write_atomic(obj: dict, path: Path) -> None:
    """Write ``obj`` in the checksummed format, atomically (see the module docstring)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise PyrovaeError(f"cannot write the checkpoint: {path} is a folder")
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    tmp = temporary_path(path)
    with open(tmp, "wb") as f:  # "wb" truncates a stale .tmp left by a crash
        f.write(MAGIC + digest + b"\n" + payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def remove_stale_temporary(path: str | os.PathLike) -> bool:
    """Delete ``<path>.tmp`` left by a run killed mid-write; True if there was one. The
    checkpoint itself is untouched: the rename is the commit point."""
    tmp = temporary_path(Path(path))
    if tmp.is_file():
        tmp.unlink()
        return True
    return False


# ------------------------------------------------------------------ state of a run


def clone_state(state):
    """A copy of a state (dicts, lists and tuples of tensors and plain values, as
    ``state_dict()`` gives them) that shares no memory with it: tensors detached and
    cloned, other values deep-copied, a ``state_dict``'s ``_metadata`` kept. What
    ``copy.deepcopy`` makes of such a state, except that a tensor found under two keys
    is copied twice; without deepcopy's Python work per tensor (its memo, a copy of the
    storage object), which ``fit`` paid at every epoch's start, where it keeps such a
    copy of the pair and of the optimizer to undo a failed epoch: on a GPU, or with small
    networks, epochs are short enough for it to show (``benchmarks/fit_epoch.py
    --features 16 --hidden 8``)."""
    if torch.is_tensor(state):
        return state.detach().clone()
    if type(state) in (dict, OrderedDict):
        copied = type(state)((key, clone_state(value)) for key, value in state.items())
        metadata = getattr(state, "_metadata", None)
        if metadata is not None:  # nn.Module.state_dict's per-module versions
            copied._metadata = copy.deepcopy(metadata)
        return copied
    if type(state) in (list, tuple):
        return type(state)(clone_state(value) for value in state)
    return copy.deepcopy(state)


def module_state(obj) -> dict:
    """Trainable state of a model or guide: a copy of its state_dict if it is an nn.Module."""
    return clone_state(obj.state_dict()) if isinstance(obj, torch.nn.Module) else {}


def load_module_state(obj, state: dict) -> None:
    if isinstance(obj, torch.nn.Module):
        obj.load_state_dict(state)


def move(obj, device: str) -> None:
    if isinstance(obj, torch.nn.Module):
        obj.to(device)


def rng_state() -> dict:
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


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_differences(saved: dict, current: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """``"name: saved -> current"`` for every setting that differs (nested dicts are
    compared key by key, named ``outer.inner``)."""
    differences = []
    for key in sorted(set(saved) | set(current)):
        if key in ignore:
            continue
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differences += [f"{key}.{d}" for d in config_differences(a, b, ignore)]
        elif _normalise(a) != _normalise(b):
            differences.append(f"{key}: {_short(a)} in the checkpoint, {_short(b)} now")
    return differences


def _short(value, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _normalise(value):
    return list(value) if isinstance(value, tuple) else value


__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "config_differences",
    "load_checkpoint",
    "read_record",
    "remove_stale_temporary",
    "write_atomic",
]
