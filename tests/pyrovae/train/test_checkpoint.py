"""Checkpoints cannot run code, refuse damage, name what is wrong, and refuse a resume
with other settings. Observed before: a __reduce__ payload ran through fit(resume=); 64
inverted bytes changed a parameter by 60,254 and training resumed; a tagged file without
keys gave KeyError: 'model'; a checkpoint from lr=0.1 resumed with lr=1e-3 kept 0.1 while
the history said 1e-3; a full-covariance checkpoint loaded into a diagonal guide at d=1;
a shape mismatch surfaced as torch's raw RuntimeError."""

import copy
import hashlib
import io
import pickle

import pytest
import torch

from guides import build_guide
from models import build_vae
from pyrovae.data import DataSplits
from pyrovae.errors import PyrovaeError
from pyrovae.train import Checkpoint, fit, load_checkpoint
from pyrovae.train.checkpoint import CHECKPOINT_FORMAT, MAGIC, temporary_path, write_atomic


def small_pair(latent_dim=2, family="diagonal"):
    return build_vae(64, latent_dim, (16,)), build_guide(64, latent_dim, family, (16,))


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
    with pytest.raises(PyrovaeError):
        fit(model, guide, digits, epochs=2, progress=False, resume=evil)
    raw_pickle = tmp_path / "evil.pkl"
    raw_pickle.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(PyrovaeError):
        load_checkpoint(raw_pickle)
    assert not marker.exists(), "loading ran code from the checkpoint"


def test_inverted_bytes_are_refused(checkpoint):
    raw = bytearray(checkpoint.read_bytes())
    middle = len(raw) // 2
    for i in range(middle, middle + 64):
        raw[i] ^= 0xFF
    checkpoint.write_bytes(bytes(raw))
    with pytest.raises(PyrovaeError, match="damaged"):
        load_checkpoint(checkpoint)


def test_a_checkpoint_missing_keys_names_them(tmp_path):
    path = tmp_path / "partial.pt"
    write_atomic({"format": CHECKPOINT_FORMAT, "epoch": 1}, path)
    with pytest.raises(PyrovaeError, match=r"lacks \['model'"):
        load_checkpoint(path)


def test_foreign_missing_empty_and_older_files_are_refused(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(PyrovaeError, match="plain torch file"):
        load_checkpoint(foreign)
    with pytest.raises(PyrovaeError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(PyrovaeError, match="not a pyrovae checkpoint"):
        load_checkpoint(empty)
    with pytest.raises(PyrovaeError, match="not a file"):
        load_checkpoint(tmp_path)  # a folder
    older = tmp_path / "v2.pt"
    older.write_bytes(b"pyrovae-checkpoint-v2\n" + b"0" * 64 + b"\n")
    with pytest.raises(PyrovaeError, match="older pyrovae"):
        load_checkpoint(older)


def test_a_written_checkpoint_is_one_record_with_the_run_settings(checkpoint):
    ckpt = load_checkpoint(checkpoint)
    assert isinstance(ckpt, Checkpoint) and ckpt.epoch == 1
    assert isinstance(ckpt.rng["numpy"], list)  # loadable with weights_only=True
    assert ckpt.run["config"]["learning_rate"] == 1e-3
    assert ckpt.run["data"]["features"] == 64
    assert "DiagonalNormalHead" in ckpt.run["pair"]["guide"]
    assert all(torch.isfinite(p).all() for p in ckpt.params.values())
    assert not temporary_path(checkpoint).exists()


def test_a_stale_temporary_file_is_removed_and_the_checkpoint_kept(digits, tmp_path):
    path = tmp_path / "run.pt"
    model, guide = small_pair()
    fit(model, guide, digits, epochs=1, progress=False, checkpoint=path)
    stale = temporary_path(path)
    stale.write_bytes(b"half a checkpoint from a killed writer")
    model, guide = small_pair()
    fit(model, guide, digits, epochs=2, progress=False, checkpoint=path, resume=path)
    assert not stale.exists()
    assert load_checkpoint(path).epoch == 2


@pytest.mark.parametrize(
    "change, named",
    [
        ({"learning_rate": 1e-2}, "learning_rate: 0.001 in the checkpoint, 0.01 now"),
        ({"seed": 5}, "seed: 0 in the checkpoint, 5 now"),
        ({"batch_size": 50}, "batch_size: 100 in the checkpoint, 50 now"),
        ({"objective": "TraceMeanField_ELBO"}, "objective: 'Trace_ELBO'"),
    ],
)
def test_resume_with_other_settings_names_each_difference(checkpoint, digits, change, named):
    model, guide = small_pair()
    with pytest.raises(PyrovaeError, match="other settings") as error:
        fit(model, guide, digits, epochs=2, progress=False, resume=checkpoint, **change)
    assert named in str(error.value)


def test_resume_may_run_longer_and_override_the_learning_rate_on_purpose(checkpoint, digits):
    model, guide = small_pair()
    history = fit(
        model,
        guide,
        digits,
        epochs=2,
        learning_rate=1e-2,
        progress=False,
        resume=checkpoint,
        override=["learning_rate"],
    )
    # the optimizer really continues with the new rate, and the history says so
    assert history.learning_rate == [1e-3, 1e-2]
    with pytest.raises(PyrovaeError, match="did you mean 'learning_rate'"):
        fit(
            model,
            guide,
            digits,
            epochs=2,
            progress=False,
            resume=checkpoint,
            override=["learnin_rate"],
        )


def test_resume_into_another_guide_family_with_equal_shapes_is_refused(digits, tmp_path):
    path = tmp_path / "full.pt"
    model, guide = small_pair(latent_dim=1, family="full")
    fit(model, guide, digits, epochs=1, progress=False, checkpoint=path)
    model, guide = small_pair(latent_dim=1, family="diagonal")
    with pytest.raises(PyrovaeError, match="pair.guide"):
        fit(model, guide, digits, epochs=2, progress=False, resume=path)


def test_resume_with_other_shapes_names_them_instead_of_a_torch_error(digits, tmp_path):
    path = tmp_path / "d2.pt"
    model, guide = small_pair(latent_dim=2)
    fit(model, guide, digits, epochs=1, progress=False, checkpoint=path)
    model, guide = small_pair(latent_dim=3)
    with pytest.raises(PyrovaeError, match="different model|shape"):
        fit(model, guide, digits, epochs=2, progress=False, resume=path, override=["pair"])


def test_resume_on_other_data_is_refused(checkpoint, digits):
    model, guide = small_pair()
    fewer = DataSplits("digits", digits.train[10:], digits.validation, digits.test, digits.binarize)
    with pytest.raises(PyrovaeError, match="data.train_rows: 1347 in the checkpoint, 1337 now"):
        fit(model, guide, fewer, epochs=2, progress=False, resume=checkpoint)


def test_a_cloned_state_equals_a_deep_copy_and_shares_no_memory():
    """fit keeps this copy of the pair and of Adam's state to undo a failed epoch."""
    from pyrovae.train.checkpoint import clone_state

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    for state, count in ((net.state_dict(), 7), (optimizer.state_dict(), 12)):
        cloned, deep = clone_state(state), copy.deepcopy(state)
        assert len(_tensors(cloned)) == count  # weight, bias, BatchNorm's 5 / Adam's 4 x 3
        assert type(cloned) is type(deep)
        assert repr(_flatten(cloned)) == repr(_flatten(deep))  # structure and plain values
        for a, b, original in zip(_tensors(cloned), _tensors(deep), _tensors(state), strict=True):
            assert torch.equal(a, b) and a.dtype == b.dtype
            assert a.untyped_storage().data_ptr() != original.untyped_storage().data_ptr()
    cloned = clone_state(net.state_dict())
    assert cloned._metadata == net.state_dict()._metadata  # BatchNorm's version, kept
    with torch.no_grad():
        net[0].weight.add_(1.0)
    assert not torch.equal(cloned["0.weight"], net[0].weight)
    net.load_state_dict(cloned)  # and it loads back
    assert torch.equal(cloned["0.weight"], net[0].weight)


def _flatten(state):
    if torch.is_tensor(state):
        return ("tensor", tuple(state.shape))
    if isinstance(state, dict):
        return {key: _flatten(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return [_flatten(value) for value in state]
    return state


def _tensors(state):
    if torch.is_tensor(state):
        return [state]
    if isinstance(state, dict):
        return [t for value in state.values() for t in _tensors(value)]
    if isinstance(state, (list, tuple)):
        return [t for value in state for t in _tensors(value)]
    return []
