"""Checkpoints cannot run code, refuse damage, and name what is wrong. Observed before:
a __reduce__ payload ran through fit(resume=); 64 inverted bytes changed a parameter by
60,254 and training resumed; a tagged file without keys gave KeyError: 'model'."""

import hashlib
import io
import pickle

import pytest
import torch

from guides import build_guide
from models import build_vae
from pyrovae.train import fit, load_checkpoint
from pyrovae.train.checkpoint import CHECKPOINT_FORMAT, MAGIC, _save_atomic


def small_pair():
    return build_vae(64, 2, (16,)), build_guide(64, 2, "diagonal", (16,))


@pytest.fixture
def checkpoint(digits, tmp_path):
    path = tmp_path / "run.pt"
    model, guide = small_pair()
    fit(model, guide, digits, epochs=1, progress=False, checkpoint=path)
    return path


class Payload:
    """Unpickling this creates a marker file: what an attacker's checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def with_valid_digest(payload: bytes) -> bytes:
    return MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


@pytest.mark.parametrize("framing", ["old torch file", "new format with a valid digest"])
def test_a_checkpoint_cannot_run_code(framing, digits, tmp_path):
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "model": Payload(marker)}, buffer)
    data = buffer.getvalue()
    evil = tmp_path / "evil.pt"
    evil.write_bytes(data if framing == "old torch file" else with_valid_digest(data))
    model, guide = small_pair()
    with pytest.raises(ValueError):
        fit(model, guide, digits, epochs=2, progress=False, resume=evil)
    raw_pickle = tmp_path / "evil.pkl"
    raw_pickle.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ValueError):
        load_checkpoint(raw_pickle)
    assert not marker.exists(), "loading ran code from the checkpoint"


def test_inverted_bytes_are_refused(checkpoint):
    raw = bytearray(checkpoint.read_bytes())
    middle = len(raw) // 2
    for i in range(middle, middle + 64):
        raw[i] ^= 0xFF
    checkpoint.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="damaged"):
        load_checkpoint(checkpoint)


def test_a_checkpoint_missing_keys_names_them(tmp_path):
    path = tmp_path / "partial.pt"
    _save_atomic({"format": CHECKPOINT_FORMAT, "epoch": 1}, path)
    with pytest.raises(ValueError, match="lacks.*'model'"):
        load_checkpoint(path)


def test_foreign_missing_and_empty_files_are_refused(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": 1}, foreign)
    with pytest.raises(ValueError, match="older pyrovae"):
        load_checkpoint(foreign)
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="header"):
        load_checkpoint(empty)
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path)  # a folder


def test_a_written_checkpoint_loads_and_leaves_no_temporary_file(checkpoint):
    ckpt = load_checkpoint(checkpoint)
    assert ckpt["epoch"] == 1 and isinstance(ckpt["rng"]["numpy"], list)
    assert not checkpoint.with_suffix(".pt.tmp").exists()
