"""Training that would silently change nothing is refused. Observed before: two pairs built
with the same explicit name= (or Pyro's examples/vae/vae.py pair built twice without
clearing the param store): the second pair's tensors never changed and fit returned."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from guides import build_guide
from models import build_vae
from pyrovae.errors import PyrovaeError
from pyrovae.train import fit


class PyroExampleVAE(nn.Module):
    """The shape of Pyro's examples/vae/vae.py: one module, fixed names, model and guide as
    methods registering ``pyro.module("decoder"/"encoder", ...)``."""

    def __init__(self, z_dim=2, hidden=32):
        super().__init__()
        self.z_dim = z_dim
        self.encoder = nn.Sequential(nn.Linear(64, hidden), nn.Softplus(), nn.Linear(hidden, 4))
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.Softplus(), nn.Linear(hidden, 64))

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("obs", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, raw = self.encoder(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3).to_event(1))


@pytest.fixture(autouse=True)
def fresh_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def test_pyros_example_pair_built_twice_is_refused_naming_the_parameters(digits):
    first = PyroExampleVAE()
    fit(first.model, first.guide, digits, epochs=1, progress=False)
    second = PyroExampleVAE()
    with pytest.raises(PyrovaeError, match=r"no gradient: \['encoder\$\$\$0.weight'") as error:
        fit(second.model, second.guide, digits, epochs=1, progress=False)
    assert "pyro.clear_param_store()" in str(error.value)
    pyro.clear_param_store()  # the fix the message gives
    before = second.decoder[0].weight.detach().clone()
    fit(second.model, second.guide, digits, epochs=1, progress=False)
    assert not torch.equal(before, second.decoder[0].weight)


def test_two_pairs_with_the_same_explicit_name_are_refused(digits):
    model_a, guide_a = build_vae(64, 2, (16,), name="mine"), build_guide(64, 2, "diagonal", (16,))
    fit(model_a, guide_a, digits, epochs=1, progress=False)
    model_b, guide_b = build_vae(64, 2, (16,), name="mine"), build_guide(64, 2, "diagonal", (16,))
    with pytest.raises(PyrovaeError, match=r"(?s)no gradient: \['mine\$\$\$.*not being optimised"):
        fit(model_b, guide_b, digits, epochs=1, progress=False)


def test_a_registered_parameter_the_loss_never_uses_is_named(digits):
    model, guide = build_vae(64, 2, (16,)), build_guide(64, 2, "diagonal", (16,))
    unused = nn.Parameter(torch.zeros(3))

    def model_with_an_unused_parameter(x):
        pyro.param("forgotten_scale", unused)
        model(x)

    with pytest.raises(PyrovaeError, match=r"no gradient: \['forgotten_scale'\]"):
        fit(model_with_an_unused_parameter, guide, digits, epochs=1, progress=False)
