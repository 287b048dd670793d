"""BernoulliLogits is dist.Bernoulli with a cheaper log_prob: same values, gradients,
shapes and validation, elementwise and summed over event dims (SummedBernoulliLogits)."""

import pyro.distributions as dist
import pytest
import torch

from pyrovae.distributions.bernoulli import BernoulliLogits, SummedBernoulliLogits


@pytest.mark.parametrize("event_dims", [0, 1, 2])
def test_matches_pyros_bernoulli_in_value_gradient_and_shape(event_dims):
    logits = torch.randn(4, 3, 7, requires_grad=True)
    x = torch.bernoulli(torch.full((3, 7), 0.4))  # broadcast over the leading 4
    ours = BernoulliLogits(logits=logits).to_event(event_dims)
    theirs = dist.Bernoulli(logits=logits).to_event(event_dims)
    assert type(ours) is (SummedBernoulliLogits if event_dims else BernoulliLogits)
    assert ours.event_shape == theirs.event_shape
    ours, theirs = ours.log_prob(x), theirs.log_prob(x)
    assert ours.shape == theirs.shape == (4, 3, 7)[: 3 - event_dims]
    torch.testing.assert_close(ours, theirs)
    (g_ours,) = torch.autograd.grad(ours.sum(), logits)
    (g_theirs,) = torch.autograd.grad(theirs.sum(), logits)
    torch.testing.assert_close(g_ours, g_theirs)
    expanded = BernoulliLogits(logits=torch.zeros(3, 7)).expand((2, 3, 7))
    assert type(expanded) is BernoulliLogits and expanded.batch_shape == (2, 3, 7)


def test_summed_form_expands_as_pyro_does_in_a_plate():
    summed = BernoulliLogits(logits=torch.zeros(3, 7)).to_event(1).expand((2, 3))
    assert type(summed) is SummedBernoulliLogits
    assert summed.batch_shape == (2, 3) and summed.event_shape == (7,)
    x = torch.ones(7)
    torch.testing.assert_close(summed.log_prob(x), torch.full((2, 3), 7 * torch.tensor(0.5).log()))


@pytest.mark.parametrize("event_dims", [0, 1])
def test_values_outside_the_support_are_refused_under_validation(event_dims):
    bernoulli = BernoulliLogits(logits=torch.zeros(3), validate_args=True).to_event(event_dims)
    with pytest.raises(ValueError, match="support"):
        bernoulli.log_prob(torch.tensor([0.5] * 3))
