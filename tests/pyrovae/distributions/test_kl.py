import math

import pyro.distributions as dist
import pytest
import torch
from torch.distributions import kl_divergence

from pyrovae.distributions import StandardNormal, kl_path


def random_prior(d, batch=()):
    return dist.Normal(torch.randn(*batch, d), torch.rand(*batch, d) + 0.5).to_event(1)


def random_mvn(batch, d):
    L = torch.randn(*batch, d, d).tril(-1) + torch.diag_embed(torch.rand(*batch, d) + 0.3)
    return dist.MultivariateNormal(torch.randn(*batch, d), scale_tril=L)


def random_lowrank(batch, d, r=2):
    return dist.LowRankMultivariateNormal(
        torch.randn(*batch, d), torch.randn(*batch, d, r), torch.rand(*batch, d) + 0.2
    )


def as_mvn(p):
    return dist.MultivariateNormal(p.base_dist.loc, scale_tril=torch.diag_embed(p.base_dist.scale))


@pytest.mark.parametrize("make_q", [random_mvn, random_lowrank])
@pytest.mark.parametrize("d", [1, 3, 8])
def test_registered_kl_equals_torch_mvn_kl(make_q, d):
    q, p = make_q((4,), d), random_prior(d)
    expected = kl_divergence(dist.MultivariateNormal(q.loc, q.covariance_matrix), as_mvn(p))
    torch.testing.assert_close(kl_divergence(q, p), expected, rtol=1e-4, atol=1e-4)


def test_registered_kl_against_standard_normal_identity():
    q = random_mvn((3,), 5)
    p = dist.Normal(torch.zeros(5), torch.ones(5)).to_event(1)
    eye = dist.MultivariateNormal(torch.zeros(5), torch.eye(5))
    torch.testing.assert_close(kl_divergence(q, p), kl_divergence(q, eye))


@pytest.mark.parametrize("make_q", [random_mvn, random_lowrank])
def test_registered_kl_agrees_with_monte_carlo(make_q):
    torch.manual_seed(0)
    q, p = make_q((3,), 4), random_prior(4)
    z = q.sample((200_000,))
    log_ratio = q.log_prob(z) - p.log_prob(z)
    mc, stderr = log_ratio.mean(0), log_ratio.std(0) / 200_000**0.5
    assert ((kl_divergence(q, p) - mc).abs() < 4 * stderr).all()


def test_non_normal_base_falls_back_to_monte_carlo():
    q = random_mvn((), 3)
    laplace = dist.Laplace(torch.zeros(3), 1.0).to_event(1)
    with pytest.raises(NotImplementedError):
        kl_divergence(q, laplace)
    assert kl_path(q, laplace) == "monte-carlo"
    assert kl_path(q, random_prior(3)) == "analytic"
    mixture = dist.MixtureOfDiagNormals(torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2))
    assert kl_path(mixture, random_prior(3)) == "monte-carlo"


def test_standard_normal_kl_equals_torchs_normal_normal_kl_in_value_and_gradient():
    """KL(q || StandardNormal) takes the short closed form; it must agree with torch's
    general Normal-Normal KL against N(0, 1), in value and in gradients, also after the
    expand a plate applies and through to_event (the shape the VAE's prior site has)."""
    torch.manual_seed(0)
    loc = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    scale = (torch.rand(4, 3, dtype=torch.float64) + 0.05).requires_grad_()
    q = dist.Normal(loc, scale).to_event(1)
    standard = StandardNormal(torch.zeros(3, dtype=torch.float64)).to_event(1).expand((4,))
    assert isinstance(standard.base_dist, StandardNormal)
    general = dist.Normal(torch.zeros(3, dtype=torch.float64), 1.0).to_event(1).expand((4,))
    ours, theirs = kl_divergence(q, standard), kl_divergence(q, general)
    assert ours.shape == (4,)
    torch.testing.assert_close(ours, theirs)
    ours_grads = torch.autograd.grad(ours.sum(), (loc, scale))
    theirs_grads = torch.autograd.grad(theirs.sum(), (loc, scale))
    for a, b in zip(ours_grads, theirs_grads, strict=True):
        torch.testing.assert_close(a, b)
    # broadcast: one q against a prior with a batch of its own
    one = dist.Normal(torch.tensor(0.5), torch.tensor(2.0))
    wide = kl_divergence(one, StandardNormal(torch.zeros(5)))
    torch.testing.assert_close(wide, torch.full((5,), 0.5 * (4 + 0.25 - 1) - math.log(2.0)))
