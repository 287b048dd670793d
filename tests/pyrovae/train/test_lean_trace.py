"""LeanTraceELBO returns the value and gradients of Pyro's Trace_ELBO without reading
values back to the host: reparameterized and score-function sites, masks, scales and
vectorized particles."""

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO

from guides import build_guide
from models import build_vae
from pyrovae.train.lean_trace import LeanTraceELBO
from pyrovae.train.objectives import SiteScale, make_objective
from tests.pyrovae.train.lean_comparison import (
    assert_loss_is_a_float_equal_to_pyros,
    assert_same_estimate,
)

# Pyro adds the site values up in float64 on the host, the lean class on the device
_VALUE_TOLERANCE = dict(rtol=1e-6, atol=1e-4)


def _assert_same_estimate(model, guide, x, params, num_particles=1):
    return assert_same_estimate(
        Trace_ELBO, LeanTraceELBO, model, guide, x, params, num_particles, **_VALUE_TOLERANCE
    )


@pytest.mark.parametrize("prior, family", [("standard", "diagonal"), ("vamp", "full")])
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


def test_score_function_sites_and_masks_match():
    """c is a discrete guide site (no rsample: Pyro's surrogate adds log q(c) times the
    downstream log ratio); x is half masked out."""
    x = torch.randn(6, 2)
    loc = torch.zeros(6, 2, requires_grad=True)
    logit = torch.zeros(6, requires_grad=True)

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([len(x), 2]).to_event(1))
            c = pyro.sample("c", dist.Bernoulli(0.3).expand([len(x)]))
            with poutine.mask(mask=torch.arange(len(x)) % 2 == 0):
                pyro.sample("x", dist.Normal(z + c.unsqueeze(-1), 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            pyro.sample("c", dist.Bernoulli(logits=logit))

    _assert_same_estimate(model, guide, x, [loc, logit])
    _assert_same_estimate(model, guide, x, [loc, logit], num_particles=4)


def test_loss_is_a_float_equal_to_pyros(digits):
    assert_loss_is_a_float_equal_to_pyros(Trace_ELBO, LeanTraceELBO, digits)


def test_registry_trains_with_the_lean_class_and_pyros_checks_still_fire():
    assert isinstance(make_objective("Trace_ELBO"), LeanTraceELBO)

    def model(x):
        with pyro.plate("data", len(x)):
            pyro.sample("a", dist.Normal(0.0, 1.0))

    def guide(x):  # the guide makes a an event of 4 values: Pyro's validation says so
        pyro.sample("a", dist.Normal(torch.zeros(len(x) + 1), 1.0).to_event(1))

    with pyro.validation_enabled(True), pytest.raises(ValueError, match="event_dims disagree"):
        LeanTraceELBO().differentiable_loss(model, guide, torch.zeros(3))
