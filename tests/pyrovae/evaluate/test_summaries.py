import pyro
import pyro.distributions as dist
import pytest
import torch

from guides import build_guide
from pyrovae.evaluate import count_parameters, posterior_correlation


def fixed_guide(make_q):
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", make_q(x.shape[0]))

    return guide


def test_diagonal_guide_has_zero_correlation(digits):
    guide = build_guide(64, 5, "diagonal", (32,))
    result = posterior_correlation(guide, digits.test)
    zero = {"mean_abs_corr": 0.0, "max_abs_corr": 0.0}
    assert result == {**zero, "sites": {"z": zero}}


def test_full_guide_reports_the_exact_correlation():
    rho = 0.6  # cov [[1, rho], [rho, 1]] has Cholesky [[1, 0], [rho, sqrt(1 - rho^2)]]
    L = torch.tensor([[1.0, 0.0], [rho, (1 - rho**2) ** 0.5]])
    guide = fixed_guide(lambda n: dist.MultivariateNormal(torch.zeros(n, 2), scale_tril=L))
    result = posterior_correlation(guide, torch.zeros(7, 3))
    assert result["mean_abs_corr"] == pytest.approx(rho, abs=1e-5)


def test_sampled_correlation_for_families_without_a_covariance():
    # A two-component mixture along the diagonal: strong positive correlation.
    locs = torch.tensor([[-2.0, -2.0], [2.0, 2.0]])
    guide = fixed_guide(
        lambda n: dist.MixtureOfDiagNormals(
            locs.expand(n, 2, 2), torch.ones(n, 2, 2), torch.zeros(n, 2)
        )
    )
    result = posterior_correlation(guide, torch.zeros(4, 3), num_samples=20_000)
    assert result["mean_abs_corr"] == pytest.approx(0.8, abs=0.03)  # 4 / (4 + 1)


def test_count_parameters():
    assert count_parameters(torch.nn.Linear(3, 2)) == 8
