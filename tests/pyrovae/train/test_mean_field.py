"""LeanMeanFieldELBO returns the value and gradients of Pyro's TraceMeanField_ELBO while
scoring only the sites the estimate reads: closed-form KL sites, Monte Carlo fallback
sites, auxiliary guide sites, masks, scales and vectorized particles."""

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

from guides import build_guide
from models import build_vae
from pyrovae.train.mean_field import LeanMeanFieldELBO
from pyrovae.train.objectives import SiteScale, make_objective
from tests.pyrovae.train.lean_comparison import (
    assert_loss_is_a_float_equal_to_pyros,
    assert_same_estimate,
)


def _assert_same_estimate(model, guide, x, params, num_particles=1):
    return assert_same_estimate(
        TraceMeanField_ELBO, LeanMeanFieldELBO, model, guide, x, params, num_particles
    )


@pytest.mark.parametrize(
    "prior, family",
    [("standard", "diagonal"), ("standard", "full"), ("vamp", "diagonal"), ("mog", "flow")],
)
@pytest.mark.parametrize("num_particles", [1, 3])
def test_same_value_and_gradients_as_pyros_class(digits, prior, family, num_particles, device):
    pyro.clear_param_store()
    x = digits.train[:16].to(device)
    guide = build_guide(64, 3, family, (32,)).to(device)
    model = build_vae(64, 3, (32,), prior, posterior=guide.posterior).to(device)
    scaler = SiteScale(data_scale=5.0, beta=0.5)  # minibatch scale and warm-up, as in fit
    params = [*model.parameters(), *guide.parameters()]
    loss = _assert_same_estimate(scaler(model), scaler(guide), x, params, num_particles)
    assert loss.item() > 0


def test_fallback_sites_auxiliary_sites_and_masks_match():
    """w has no closed-form KL (LogNormal guide, Gamma prior): log p - log q at the draw;
    u is an auxiliary guide site; x is half masked out."""
    x = torch.randn(6, 2)
    loc = torch.zeros(6, 2, requires_grad=True)
    log_w = torch.zeros(6, requires_grad=True)

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([len(x), 2]).to_event(1))
            w = pyro.sample("w", dist.Gamma(2.0, 2.0).expand([len(x)]))
            with poutine.mask(mask=torch.arange(len(x)) % 2 == 0):
                pyro.sample("x", dist.Normal(z * w.unsqueeze(-1), 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            pyro.sample("w", dist.LogNormal(log_w, 0.5))
            pyro.sample("u", dist.Normal(log_w, 2.0), infer={"is_auxiliary": True})

    _assert_same_estimate(model, guide, x, [loc, log_w])
    _assert_same_estimate(model, guide, x, [loc, log_w], num_particles=4)


def test_loss_is_a_float_equal_to_pyros(digits):
    assert_loss_is_a_float_equal_to_pyros(TraceMeanField_ELBO, LeanMeanFieldELBO, digits)


def test_registry_trains_with_the_lean_class_and_pyros_checks_still_fire():
    assert isinstance(make_objective("TraceMeanField_ELBO"), LeanMeanFieldELBO)

    def model(x):
        with pyro.plate("data", len(x)):
            a = pyro.sample("a", dist.Normal(0.0, 1.0))
            pyro.sample("b", dist.Normal(a, 1.0))

    def guide(x):  # a depends on b in the guide, sampled in the other order
        with pyro.plate("data", len(x)):
            b = pyro.sample("b", dist.Normal(0.0, 1.0))
            pyro.sample("a", dist.Normal(b, 1.0))

    with pyro.validation_enabled(True), pytest.warns(UserWarning, match="mean field"):
        LeanMeanFieldELBO().differentiable_loss(model, guide, torch.zeros(3))
