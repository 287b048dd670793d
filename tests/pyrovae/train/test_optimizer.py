"""The optimizer: PyTorch's fused Adam where the kernel exists, the same update rule as the
default Adam, kept across a resume from a state saved without it; and the end-of-epoch
check that names the parameter or optimizer-state tensor that went non-finite."""

import copy

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.distributions import constraints

from guides import build_guide
from models import build_vae
from pyrovae.train import SVIStep, fit, load_checkpoint
from pyrovae.train.loop import _non_finite_state
from pyrovae.train.step import make_adam, use_fused_kernel


def _gradients(params, seed):
    generator = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator, dtype=p.dtype)


def test_fused_adam_follows_the_default_update_rule():
    start = [torch.randn(5, 3), torch.randn(3)]
    fused_params = [p.clone().requires_grad_() for p in start]
    default_params = [p.clone().requires_grad_() for p in start]
    fused = make_adam(fused_params, 1e-2)
    default = torch.optim.Adam(default_params, lr=1e-2)
    assert fused.param_groups[0]["fused"] is True
    for seed in range(20):
        for params, optimizer in ((fused_params, fused), (default_params, default)):
            _gradients(params, seed)
            optimizer.step()
    for a, b in zip(fused_params, default_params, strict=True):
        torch.testing.assert_close(a, b)
        assert not torch.equal(a, start[0] if a.dim() == 2 else start[1])


def test_tensors_without_a_fused_kernel_get_the_default_adam():
    optimizer = make_adam([torch.zeros(3, device="meta", requires_grad=True)], 1e-3)
    assert not optimizer.param_groups[0]["fused"]


def test_a_state_saved_without_the_fused_kernel_resumes_with_it():
    params = [torch.randn(4, requires_grad=True)]
    old = torch.optim.Adam(params, lr=1e-2)  # what checkpoints before fused Adam hold
    _gradients(params, 0)
    old.step()
    resumed = make_adam(params, 1e-2)
    resumed.load_state_dict(copy.deepcopy(old.state_dict()))
    assert not resumed.param_groups[0]["fused"]  # load_state_dict brought 'fused' back
    use_fused_kernel(resumed)
    assert resumed.param_groups[0]["fused"] is True
    expected = [p.detach().clone().requires_grad_() for p in params]
    reference = torch.optim.Adam(expected, lr=1e-2)
    reference.load_state_dict(copy.deepcopy(old.state_dict()))
    for seed in (1, 2):
        _gradients(params, seed)
        _gradients(expected, seed)
        resumed.step()
        reference.step()
    torch.testing.assert_close(params[0], expected[0])
    assert resumed.state[params[0]]["step"].item() == 3


def test_a_fit_checkpoint_resumes_on_the_fused_kernel(digits, tmp_path, device):
    guide = build_guide(64, 2, "diagonal", (16,))
    model = build_vae(64, 2, (16,))
    path = tmp_path / "run.pt"
    config = dict(checkpoint=path, progress=False, device=device)
    fit(model, guide, digits, epochs=1, **config)
    assert load_checkpoint(path).optimizer["param_groups"][0]["fused"] is True
    history = fit(model, guide, digits, epochs=2, resume=path, **config)
    assert history.epoch == [1, 2]


def test_the_non_finite_tensor_is_named(digits):
    pyro.clear_param_store()
    guide = build_guide(64, 2, "diagonal", (16,))
    model = build_vae(64, 2, (16,))
    step = SVIStep(model, guide)
    with pyro.validation_enabled(False):
        step(digits.train[:32])
    assert _non_finite_state(step) is None
    last = step.params[-1]
    step.optimizer.state[last]["exp_avg_sq"][0] = float("inf")
    assert _non_finite_state(step) == f"the optimizer's exp_avg_sq of {step.param_names[-1]!r}"
    with torch.no_grad():
        step.params[0].view(-1)[0] = float("nan")
    assert _non_finite_state(step) == f"parameter {step.param_names[0]!r}"


@pytest.mark.parametrize("value", [float("nan"), float("-inf")])
def test_nan_and_minus_infinity_in_adams_moments_are_found(digits, value):
    """A moment that went NaN or -inf is named, with the step counts summed beside it."""
    pyro.clear_param_store()
    step = SVIStep(build_vae(64, 2, (16,)), build_guide(64, 2, "diagonal", (16,)))
    with pyro.validation_enabled(False):
        step(digits.train[:32])
    step.optimizer.state[step.params[0]]["exp_avg"].view(-1)[0] = value
    assert "exp_avg of" in _non_finite_state(step)


class ConstrainedPair(torch.nn.Module):
    """A decoder registered by pyro.module and a positive noise scale by pyro.param."""

    def __init__(self):
        super().__init__()
        self.decoder = torch.nn.Linear(2, 64)
        self.encoder = torch.nn.Linear(64, 4)

    def model(self, x):
        pyro.module("constrained_decoder", self.decoder)
        noise = pyro.param("noise", torch.tensor(0.5), constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), noise).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("constrained_encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, raw = self.encoder(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, torch.nn.functional.softplus(raw) + 1e-3).to_event(1))


def _train(x, shortcut: bool, steps: int = 8):
    pyro.clear_param_store()
    pyro.set_rng_seed(4)
    pair = ConstrainedPair()
    step = SVIStep(pair.model, pair.guide, "Trace_ELBO", learning_rate=0.05)
    with pyro.validation_enabled(False):
        for _ in range(steps):
            step(x)
            step.stored_params.active = shortcut
    named = zip(step.param_names, step.params, strict=True)
    return step, {name: p.detach().clone() for name, p in named}


def test_stored_params_answer_from_the_param_store_and_train_identically(digits):
    """Past setup, pyro.param/pyro.module are answered from the store (no param sites in the
    step's traces) and training follows exactly the same path as Pyro's own handling."""
    x = digits.train[:20]
    _, without = _train(x, shortcut=False)
    step, with_shortcut = _train(x, shortcut=True)
    assert set(with_shortcut) == set(without) and "noise" in with_shortcut
    for name, value in with_shortcut.items():
        assert torch.equal(value, without[name]), name
    assert not torch.allclose(with_shortcut["noise"], torch.tensor(0.5).log())  # it trained
    with poutine.trace() as traced:
        step.model(x)
    assert not any(site["type"] == "param" for site in traced.trace.nodes.values())
    step.stored_params.active = False
    with poutine.trace() as traced:
        step.model(x)
    assert "noise" in traced.trace.nodes
