"""Draws per chunk of the importance estimators: chosen for the device when not given
(100 on the CPU, 1,000 on CUDA, where 100 ran 4.6x slower on an H100), halved and retried
when an automatic chunk runs out of GPU memory, and a clear error when a given one does."""

import pyro
import pytest
import torch

from guides import build_guide
from models import build_vae
from pyrovae.errors import PyrovaeError
from pyrovae.evaluate import estimators, importance, log_likelihood
from pyrovae.evaluate.importance import default_sample_chunk
from tests.conftest import DEVICES


@pytest.fixture
def pair_and_data(digits):
    return build_vae(64, 2, (16,)), build_guide(64, 2, "diagonal", (16,)), digits.test[:8]


def test_the_default_chunk_depends_on_the_device():
    assert default_sample_chunk(torch.device("cpu")) == 100
    assert default_sample_chunk(torch.device("cuda")) == 1000
    assert default_sample_chunk(torch.device("meta")) == 100


def fits_in_30_draws(monkeypatch) -> list[tuple[int, bool]]:
    """site_log_probs that runs out of (simulated) GPU memory above 30 draws, before
    drawing anything; returns the log of (draws asked, fitted)."""
    calls, real = [], importance.site_log_probs

    def limited(model, guide, x, num_samples):
        calls.append((num_samples, num_samples <= 30))
        if num_samples > 30:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, guide, x, num_samples)

    monkeypatch.setattr(importance, "site_log_probs", limited)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    return calls


def test_an_automatic_chunk_is_halved_until_it_fits(pair_and_data, monkeypatch):
    model, guide, x = pair_and_data
    pyro.set_rng_seed(1)
    expected = log_likelihood(model, guide, x, num_samples=100, sample_chunk=25)
    calls = fits_in_30_draws(monkeypatch)
    pyro.set_rng_seed(1)
    automatic = log_likelihood(model, guide, x, num_samples=100)
    assert calls[:3] == [(100, False), (50, False), (25, True)]
    assert sum(size for size, fitted in calls if fitted) == 100  # every draw once
    assert torch.equal(automatic, expected)  # the same draws as chunks of 25 from the start


def test_a_given_chunk_that_does_not_fit_says_what_to_do(pair_and_data, monkeypatch):
    model, guide, x = pair_and_data
    fits_in_30_draws(monkeypatch)
    with pytest.raises(PyrovaeError, match="out of GPU memory.*smaller sample_chunk"):
        log_likelihood(model, guide, x, num_samples=100, sample_chunk=50)


@pytest.mark.parametrize("bad", [0, -5, 2.5, "100", True])
def test_a_chunk_that_is_no_positive_integer_is_refused(pair_and_data, bad):
    model, guide, x = pair_and_data
    with pytest.raises(PyrovaeError, match="sample_chunk must be a positive integer"):
        log_likelihood(model, guide, x, num_samples=10, sample_chunk=bad)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("prior", ["standard", "vamp"])
def test_the_chunks_of_an_estimate_launch_without_waiting_for_the_gpu(digits, prior, device):
    """On an H100, S = 5,000 at 1,000 draws per chunk ran at 0.889 of a hand-written
    IWAE (benchmarks/iwae_eval.py): a host read per chunk would keep the GPU idle while
    Python prepares the next chunk. After the checks log_likelihood makes once per call,
    its chunks must not read anything back (on CUDA: PyTorch's sync debug mode raises on
    any such read; on the CPU the same computation runs, without that check)."""
    pyro.set_rng_seed(0)
    guide = build_guide(64, 2, "diagonal", (16,)).to(device)
    model = build_vae(64, 2, (16,), prior, posterior=guide.posterior).to(device)
    x = torch.bernoulli(digits.test[:20]).to(device)

    def chunks():
        pyro.set_rng_seed(1)
        return estimators.rows_log_likelihood(model, guide, x, 300, 10, 100, enumerated=False)

    expected = chunks()
    if device == "cuda":
        torch.cuda.set_sync_debug_mode("error")
    try:
        got = chunks()
    finally:
        if device == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    assert got.shape == (20,) and torch.isfinite(got).all()
    torch.testing.assert_close(got, expected)
