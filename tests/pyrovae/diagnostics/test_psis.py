import math

import numpy as np
import pyro
import pytest
import torch
from pyro.infer.importance import psis_diagnostic

from pyrovae.diagnostics import importance_ess, khat_threshold, psis_khat, summarize
from pyrovae.evaluate import log_weights
from tests.pyrovae.evaluate.ppca import PPCA


def normal_log_ratios(s: float, n: int, seed: int = 0) -> np.ndarray:
    """log p - log q for p = N(0, 1), draws from q = N(0, s)."""
    z = np.random.default_rng(seed).normal(0, s, n)
    return (-0.5 * z**2) - (-0.5 * (z / s) ** 2 - np.log(s))


def test_khat_convention_on_a_known_case():
    # k = 1 - s^2 in theory: s = 0.5 -> 0.75. A sign slip gives a negative k.
    ks = [psis_khat(normal_log_ratios(0.5, 4000, seed))[0] for seed in range(10)]
    assert 0.6 < np.mean(ks) < 0.9, ks
    assert psis_khat(normal_log_ratios(2.0, 4000))[0] < 0.3  # wide proposal: reliable
    narrow = [psis_khat(normal_log_ratios(0.2, 4000, seed))[0] for seed in range(6)]
    assert np.mean(narrow) > 0.8  # theory 0.96; single estimates range ~0.73-0.97


def test_khat_is_per_data_point():
    lr = np.stack([normal_log_ratios(2.0, 4000, 1), normal_log_ratios(0.2, 4000, 2)], axis=1)
    k = psis_khat(lr)
    assert k.shape == (2,) and k[0] < 0.3 and k[1] > 0.7


def test_khat_agrees_with_pyro_psis_diagnostic():
    ppca = PPCA(data_dim=4, latent_dim=2, sigma=0.3)
    x = ppca.sample_x(1)

    def narrow_guide(x):
        ppca.diagonal_guide(x, inflate=0.6)

    ours = np.mean(
        [psis_khat(log_weights(ppca.model, narrow_guide, x, 5000).numpy())[0] for _ in range(5)]
    )
    pyros = np.mean(
        [psis_diagnostic(ppca.model, narrow_guide, x, num_particles=5000) for _ in range(5)]
    )
    assert abs(ours - pyros) < 0.15, (ours, pyros)


def test_exact_posterior_gives_very_low_khat_and_full_ess():
    ppca = PPCA()
    x = ppca.sample_x(10)
    lr = log_weights(ppca.model, ppca.exact_guide, x, 1000).numpy()
    assert (psis_khat(lr) < 0.1).all()
    np.testing.assert_allclose(importance_ess(lr), 1000, rtol=1e-3)


def test_ess_matches_its_closed_form_and_the_summary_counts_bad_points():
    # q = N(0, 2^2), p = N(0, 1): E_q[w^2] = s / sqrt(2 - 1/s^2), so ESS/S -> 0.6614
    expected = 2000 / (2.0 / math.sqrt(2 - 1 / 4.0))
    for seed in range(3):
        ess = importance_ess(normal_log_ratios(2.0, 2000, seed)[:, None])
        assert ess[0] == pytest.approx(expected, rel=0.02)
    good, bad = normal_log_ratios(2.0, 2000)[:, None], normal_log_ratios(0.3, 2000)[:, None]
    both = np.concatenate([good, bad], axis=1)
    summary = summarize(psis_khat(both), importance_ess(both), 2000)
    assert khat_threshold(2000) == pytest.approx(0.697, abs=1e-3)
    assert summary["khat threshold"] == khat_threshold(2000)
    assert summary["share khat > threshold"] == 0.5  # the narrow proposal, not the wide one
    assert summary["ESS median"] == pytest.approx(np.median(importance_ess(both)))
    with pytest.raises(ValueError, match="NaN or Inf"):
        psis_khat(np.array([[0.0], [np.nan]]))


@pytest.fixture(autouse=True)
def _seed():
    pyro.set_rng_seed(0)
    torch.manual_seed(0)


def test_too_few_draws_for_psis_is_refused_with_the_minimum():
    """Observed: 20 draws reached arviz-stats' own 'n_draws_tail must be at least 5'."""
    from pyrovae.errors import PyrovaeError

    with pytest.raises(PyrovaeError, match="at least 25 draws per data point.*S = 20"):
        psis_khat(normal_log_ratios(2.0, 20)[:, None])
    assert psis_khat(normal_log_ratios(2.0, 25)[:, None]).shape == (1,)
