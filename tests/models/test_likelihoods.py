"""The Bernoulli likelihood's optional clamp of its mean to [p, 1 - p] (the published
VampPrior code's log_Bernoulli, p = 1e-5): no pixel costs more than -log p, a clamped pixel
passes no gradient, and without the clamp nothing changes."""

import math

import pytest
import torch

from models import BernoulliLikelihood, make_likelihood

LOGITS = torch.tensor([[-1e4, -30.0, -11.0, 0.0, 3.0, 11.0, 30.0, 1e4]])
X = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]])  # mostly the unlikely value


def per_pixel(likelihood, logits):
    return likelihood(logits).base_dist.log_prob(X)


def test_no_pixel_costs_more_than_minus_log_p_under_the_clamp():
    clamped = make_likelihood("bernoulli", 8, min_probability=1e-5)
    log_p = per_pixel(clamped, LOGITS)
    assert log_p.min().item() == pytest.approx(math.log(1e-5), rel=1e-5)
    assert log_p.min().item() >= math.log(1e-5) - 1e-4
    unclamped = per_pixel(BernoulliLikelihood(8), LOGITS)
    assert unclamped.min().item() < -1e3  # what one far-out logit cost before
    inside = (LOGITS.abs() < 11.5).squeeze(0)
    assert torch.allclose(log_p[0, inside], unclamped[0, inside])  # unchanged inside


def test_a_clamped_pixel_passes_no_gradient_and_one_inside_does():
    logits = LOGITS.clone().requires_grad_()
    per_pixel(BernoulliLikelihood(8, min_probability=1e-5), logits).sum().backward()
    outside = (LOGITS.abs() > 11.6).squeeze(0)
    assert (logits.grad[0, outside] == 0).all()
    assert (logits.grad[0, ~outside] != 0).all()


def test_the_mean_is_clamped_too_and_prints_its_clamp():
    likelihood = BernoulliLikelihood(8, min_probability=1e-5)
    mean = likelihood.mean(LOGITS)
    assert mean.min().item() == pytest.approx(1e-5, rel=1e-3)
    assert mean.max().item() == pytest.approx(1 - 1e-5, abs=1e-6)
    assert "min_probability=1e-05" in repr(likelihood)
    assert repr(BernoulliLikelihood(8)) == "BernoulliLikelihood()"


@pytest.mark.parametrize("p", [-1e-5, 0.5, 2.0])
def test_a_probability_bound_outside_zero_to_a_half_is_refused(p):
    with pytest.raises(ValueError, match="min_probability must be in \\[0, 0.5\\)"):
        BernoulliLikelihood(8, min_probability=p)
