"""Checkpoints: the state of a run (pair, optimizer, RNG, history) written atomically and
read back with a clear error when missing or corrupt."""

from __future__ import annotations

import copy
import os
import random
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_FORMAT = "pyrovae-checkpoint-v1"


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
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_atomic(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a half-written checkpoint


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by ``fit``; ``ValueError`` if it is missing or corrupt."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises many types for a damaged file
        raise ValueError(
            f"checkpoint {path} is corrupt or not a torch file ({type(error).__name__}: "
            f"{error}); delete it and train again, or pass another file"
        ) from error
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a pyrovae checkpoint (no '{CHECKPOINT_FORMAT}' tag)")
    return ckpt


def _move(obj, device: str) -> None:
    if isinstance(obj, torch.nn.Module):
        obj.to(device)
