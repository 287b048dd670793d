"""Checks that a lean ELBO class returns the value and gradients of the Pyro class it
replaces, on the same draws."""

import pyro
import pytest
import torch

from guides import build_guide
from models import build_vae


def _loss_and_gradients(elbo, model, guide, x, params):
    pyro.set_rng_seed(7)
    with pyro.validation_enabled(False):
        loss = elbo.differentiable_loss(model, guide, x)
    return loss.detach(), torch.autograd.grad(loss, params)


def assert_same_estimate(
    pyros_class, lean_class, model, guide, x, params, num_particles=1, **value_tolerance
):
    """Assert equal losses (``value_tolerance`` passed to assert_close) and equal
    gradients with respect to ``params``; return the lean loss."""
    kwargs = dict(num_particles=num_particles, vectorize_particles=num_particles > 1)
    pyros = _loss_and_gradients(pyros_class(**kwargs), model, guide, x, params)
    lean = _loss_and_gradients(lean_class(**kwargs), model, guide, x, params)
    torch.testing.assert_close(lean[0], pyros[0], **value_tolerance)
    for ours, theirs in zip(lean[1], pyros[1], strict=True):
        torch.testing.assert_close(ours, theirs)
    return lean[0]


def assert_loss_is_a_float_equal_to_pyros(pyros_class, lean_class, digits):
    """``loss`` of a digits VAE: a Python float, equal to Pyro's within 1e-6 relative."""
    pyro.clear_param_store()
    guide = build_guide(64, 3, "diagonal", (32,))
    model = build_vae(64, 3, (32,))
    values = []
    for elbo in (pyros_class(), lean_class()):
        pyro.set_rng_seed(3)
        with pyro.validation_enabled(False):
            values.append(elbo.loss(model, guide, digits.train[:8]))
    assert isinstance(values[1], float)
    assert values[1] == pytest.approx(values[0], rel=1e-6)
