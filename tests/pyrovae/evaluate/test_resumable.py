"""log p(x) in saved blocks: an interrupted evaluation continues to the values an
uninterrupted one gives, bit for bit; a file from other data, parameters or settings is
refused; a damaged file is refused."""

import pyro
import pytest
import torch

from guides import build_guide
from models import build_vae
from pyrovae.errors import PyrovaeError
from pyrovae.evaluate import log_likelihood, resumable, resumable_log_likelihood
from tests.pyrovae.evaluate.test_enumeration import make_guide, uniform
from tests.pyrovae.evaluate.test_enumeration import model as mixture_model

SETTINGS = dict(num_samples=20, batch_size=10)


@pytest.fixture
def pair(digits, device):
    pyro.clear_param_store()
    torch.manual_seed(1)
    model = build_vae(64, 2, (16,)).to(device)
    guide = build_guide(64, 2, "diagonal", (16,)).to(device)
    return model, guide, digits.test[:35].to(device)  # 4 batches, the last one partial


class Interrupted(Exception):
    pass


def interrupt_after(monkeypatch, blocks: int) -> None:
    """The evaluation dies after ``blocks`` saved blocks, as a killed process would."""
    real, calls = resumable.rows_log_likelihood, []

    def dying(*args):
        if len(calls) == blocks:
            raise Interrupted
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(resumable, "rows_log_likelihood", dying)


def test_without_interruption_it_is_log_likelihood(pair, tmp_path):
    model, guide, x = pair
    pyro.set_rng_seed(0)
    expected = log_likelihood(model, guide, x, **SETTINGS)
    pyro.set_rng_seed(0)
    values = resumable_log_likelihood(model, guide, x, tmp_path / "p.pt", **SETTINGS)
    assert torch.equal(values, expected)


def test_an_interrupted_evaluation_continues_to_the_same_values(pair, tmp_path, monkeypatch):
    model, guide, x = pair
    pyro.set_rng_seed(0)
    expected = resumable_log_likelihood(model, guide, x, tmp_path / "whole.pt", **SETTINGS)
    path = tmp_path / "interrupted.pt"
    pyro.set_rng_seed(0)
    with monkeypatch.context() as patch:
        interrupt_after(patch, blocks=2)
        with pytest.raises(Interrupted):
            resumable_log_likelihood(model, guide, x, path, **SETTINGS)
    pyro.set_rng_seed(123)  # a fresh process: another random state; the file's is used
    values = resumable_log_likelihood(model, guide, x, path, **SETTINGS)
    assert torch.equal(values, expected)


def test_a_time_limit_stops_at_a_saved_block_and_a_second_call_finishes(pair, tmp_path):
    model, guide, x = pair
    pyro.set_rng_seed(0)
    expected = resumable_log_likelihood(model, guide, x, tmp_path / "whole.pt", **SETTINGS)
    path = tmp_path / "limited.pt"
    pyro.set_rng_seed(0)
    # any block outlasts a microsecond: the first always runs, then the call returns
    first = resumable_log_likelihood(model, guide, x, path, time_limit=1e-6, **SETTINGS)
    assert first.shape == (10,) and torch.equal(first, expected[:10])
    pyro.set_rng_seed(123)
    assert torch.equal(resumable_log_likelihood(model, guide, x, path, **SETTINGS), expected)
    with pytest.raises(PyrovaeError, match="time_limit must be"):
        resumable_log_likelihood(model, guide, x, path, time_limit=0, **SETTINGS)


def test_a_finished_file_is_read_back_without_drawing(pair, tmp_path):
    model, guide, x = pair
    path = tmp_path / "p.pt"
    first = resumable_log_likelihood(model, guide, x, path, **SETTINGS)
    state = torch.get_rng_state()
    again = resumable_log_likelihood(model, guide, x, path, **SETTINGS)
    assert torch.equal(again, first)
    assert torch.equal(torch.get_rng_state(), state)


def test_blocks_of_several_batches_give_the_same_values(pair, tmp_path):
    model, guide, x = pair
    pyro.set_rng_seed(0)
    one = resumable_log_likelihood(model, guide, x, tmp_path / "a.pt", **SETTINGS)
    pyro.set_rng_seed(0)
    three = resumable_log_likelihood(model, guide, x, tmp_path / "b.pt", save_every=3, **SETTINGS)
    assert torch.equal(one, three)


def test_a_file_from_other_data_parameters_or_settings_is_refused(pair, tmp_path):
    model, guide, x = pair
    path = tmp_path / "p.pt"
    resumable_log_likelihood(model, guide, x, path, **SETTINGS)
    with pytest.raises(PyrovaeError, match="num_samples=20 .now 21.*Delete it"):
        resumable_log_likelihood(model, guide, x, path, num_samples=21, batch_size=10)
    with pytest.raises(PyrovaeError, match="other data points"):
        resumable_log_likelihood(model, guide, x[:-1], path, **SETTINGS)
    with torch.no_grad():
        next(guide.parameters())[0, 0] += 1e-3
    with pytest.raises(PyrovaeError, match="other parameters"):
        resumable_log_likelihood(model, guide, x, path, **SETTINGS)


def test_a_damaged_file_is_refused(pair, tmp_path):
    model, guide, x = pair
    path = tmp_path / "p.pt"
    resumable_log_likelihood(model, guide, x, path, **SETTINGS)
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(PyrovaeError, match="progress file .* is damaged.*evaluate again"):
        resumable_log_likelihood(model, guide, x, path, **SETTINGS)


@pytest.mark.parametrize("bad", [{"save_every": 0}, {"batch_size": 0}, {"sample_chunk": -1}])
def test_bad_arguments_are_refused(pair, tmp_path, bad):
    model, guide, x = pair
    with pytest.raises(PyrovaeError, match=next(iter(bad))):
        resumable_log_likelihood(model, guide, x, tmp_path / "p.pt", **{**SETTINGS, **bad})


def test_an_enumerated_guide_continues_to_the_same_values(tmp_path, monkeypatch):
    pyro.clear_param_store()
    guide = make_guide(uniform)  # plain functions: the parameters are the param store's
    x = torch.randn(25, 2)
    pyro.set_rng_seed(0)
    expected = log_likelihood(mixture_model, guide, x, **SETTINGS)
    path = tmp_path / "p.pt"
    pyro.set_rng_seed(0)
    with monkeypatch.context() as patch:
        interrupt_after(patch, blocks=1)
        with pytest.raises(Interrupted):
            resumable_log_likelihood(mixture_model, guide, x, path, **SETTINGS)
    assert torch.equal(
        resumable_log_likelihood(mixture_model, guide, x, path, **SETTINGS), expected
    )
