"""BernoulliLogits is dist.Bernoulli with a cheaper log_prob: same values, gradients,
shapes and validation."""

import pyro.distributions as dist
import pytest
import torch

from pyrovae.distributions.bernoulli import BernoulliLogits


def test_matches_pyros_bernoulli_in_value_gradient_and_shape():
    logits = torch.randn(4, 3, 7, requires_grad=True)
    x = torch.bernoulli(torch.full((3, 7), 0.4))  # broadcast over the leading 4
    ours = BernoulliLogits(logits=logits).to_event(1).log_prob(x)
    theirs = dist.Bernoulli(logits=logits).to_event(1).log_prob(x)
    assert ours.shape == theirs.shape == (4, 3)
    torch.testing.assert_close(ours, theirs)
    (g_ours,) = torch.autograd.grad(ours.sum(), logits)
    (g_theirs,) = torch.autograd.grad(theirs.sum(), logits)
    torch.testing.assert_close(g_ours, g_theirs)
    expanded = BernoulliLogits(logits=torch.zeros(3, 7)).expand((2, 3, 7))
    assert type(expanded) is BernoulliLogits and expanded.batch_shape == (2, 3, 7)


def test_values_outside_the_support_are_refused_under_validation():
    with pytest.raises(ValueError, match="support"):
        BernoulliLogits(logits=torch.zeros(3), validate_args=True).log_prob(torch.tensor([0.5] * 3))
