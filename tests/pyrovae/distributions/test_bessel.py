"""log I_nu and the ratio I_{nu+1}/I_nu in pure torch, against scipy (mpmath where float64
scipy underflows), in float64 and float32, over the grid the von Mises-Fisher needs."""

import math

import mpmath
import numpy as np
import pytest
import scipy.special
import torch

from pyrovae.distributions import bessel_ratio, log_iv, log_ive

ORDERS = [0, 0.5, 1, 1.5, 4, 15.5, 29, 31, 63, 127, 255.5, 499]
KAPPAS = np.logspace(-4, 5, 28)


def reference_log_ive(nu: float, kappa: float) -> float:
    value = scipy.special.ive(nu, kappa)
    if np.isfinite(value) and value > 1e-290:
        return math.log(value)
    mpmath.mp.dps = 30
    return float(mpmath.log(mpmath.besseli(nu, kappa, maxterms=10**6)) - kappa)


@pytest.fixture(scope="module")
def reference():
    return {
        nu: np.array([reference_log_ive(nu, k) for k in KAPPAS])
        for nu in ORDERS + [o + 1 for o in ORDERS]
    }


@pytest.mark.parametrize("nu", ORDERS)
def test_log_ive_matches_scipy_in_float64_and_float32(nu, reference):
    kappa = torch.tensor(KAPPAS)
    expected = reference[nu]
    scale = np.maximum(1, np.abs(expected))
    assert np.max(np.abs(log_ive(nu, kappa).numpy() - expected) / scale) < 1e-10
    ours32 = log_ive(nu, kappa.float())
    assert ours32.dtype == torch.float32 and torch.isfinite(ours32).all()
    assert np.max(np.abs(ours32.double().numpy() - expected) / scale) < 1e-6


@pytest.mark.parametrize("nu", ORDERS)
def test_ratio_matches_scipy(nu, reference):
    kappa = torch.tensor(KAPPAS)
    expected = np.exp(reference[nu + 1] - reference[nu])
    np.testing.assert_allclose(bessel_ratio(nu, kappa).numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(bessel_ratio(nu, kappa.float()).numpy(), expected, rtol=1e-6)


def test_high_orders_stay_finite_where_float32_ive_underflows():
    """scipy's float64 ive(255, 12) is ~1e-300 and float32 would be 0 (log -> -inf)."""
    kappa = torch.tensor([1e-4, 0.9, 11.0, 67.0, 309.0], dtype=torch.float32)
    for nu in (31, 63, 127, 255):
        assert torch.isfinite(log_ive(nu, kappa)).all()
        assert torch.isfinite(bessel_ratio(nu, kappa)).all()


@pytest.mark.parametrize("nu", [0, 1.5, 4, 40])
def test_gradients_match_finite_differences(nu):
    kappa = torch.tensor([0.01, 0.7, 5.0, 80.0, 3000.0], dtype=torch.float64, requires_grad=True)
    for fn in (log_ive, bessel_ratio):
        assert torch.autograd.gradcheck(lambda k, f=fn: f(nu, k), (kappa,), eps=1e-6, atol=1e-7)


def test_log_iv_adds_kappa_back():
    kappa = torch.tensor([0.5, 20.0], dtype=torch.float64)
    expected = np.log(scipy.special.iv(3, kappa.numpy()))
    np.testing.assert_allclose(log_iv(3, kappa).numpy(), expected, rtol=1e-10)


def test_negative_order_is_refused():
    with pytest.raises(ValueError, match="order must be >= 0"):
        log_ive(-1, torch.ones(1))
