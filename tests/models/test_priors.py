"""Every registered prior: its distribution, its declared support, its options; and what
the learnable priors promise (mixture parameters train, the VampPrior owns pseudo-inputs
but not the encoder)."""

import math

import numpy as np
import pyro
import pytest
import scipy.stats
import torch
from scipy.special import logsumexp

from guides import build_guide
from models import PRIORS, build_vae, make_prior, prior_options
from pyrovae import fit, supports

D = 4


def build(name, **options):
    guide = build_guide(64, D, "diagonal", (16,))
    return make_prior(name, D, data_dim=64, posterior=guide.posterior, **options), guide


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_every_prior_gives_a_distribution_on_its_declared_support(name):
    prior, _ = build(name, **({"num_pseudo_inputs": 7} if name == "vamp" else {}))
    p = prior()
    assert p.event_shape == (D,)
    z = p.sample((50,))
    assert z.shape == (50, D)
    declared = supports.CATALOGUE["prior"][name]
    actual = supports.support_name(p.support)
    assert actual == ("real_vector" if declared == supports.SAME_AS_GUIDE else declared)
    assert bool(p.support.check(z).all())
    log_p = p.log_prob(z)
    assert log_p.shape == (50,) and torch.isfinite(log_p).all()
    wide = p.expand((3, 5))
    assert wide.log_prob(z[:15].reshape(3, 5, D)).shape == (3, 5)


def test_the_standard_prior_is_n01_and_keeps_its_checkpointed_buffers():
    """It returns the StandardNormal that carries the short KL, with N(0, I)'s density,
    and its state dict keeps the ``scale`` buffer, so checkpoints written before load."""
    from pyrovae.distributions import StandardNormal

    prior, _ = build("standard")
    p = prior()
    assert isinstance(p.base_dist, StandardNormal)
    z = torch.randn(6, D)
    np.testing.assert_allclose(
        p.log_prob(z).numpy(), scipy.stats.norm.logpdf(z.numpy()).sum(-1), rtol=1e-5
    )
    assert set(prior.state_dict()) == {"loc", "scale"}


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_unknown_options_are_refused_naming_the_valid_ones(name):
    valid = [o.name for o in prior_options(name)]
    with pytest.raises(ValueError, match="has no option 'banana'"):
        build(name, banana=1)
    assert all(isinstance(v, str) for v in valid)


def test_mixture_of_gaussians_log_prob_matches_scipy():
    prior, _ = build("mog", num_components=4)
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
    p = prior()
    z = torch.randn(6, D)
    scales = (torch.nn.functional.softplus(prior.raw_scales) + prior.min_scale).detach()
    log_w = torch.log_softmax(prior.logits, 0).detach().numpy()
    comps = np.stack(
        [
            scipy.stats.norm(prior.locs[k].detach().numpy(), scales[k].numpy())
            .logpdf(z.numpy())
            .sum(-1)
            for k in range(4)
        ],
        -1,
    )
    np.testing.assert_allclose(
        p.log_prob(z).detach().numpy(), logsumexp(comps + log_w, -1), rtol=1e-5
    )


def test_vamp_prior_is_the_mean_of_the_guides_posteriors_at_the_pseudo_inputs():
    prior, guide = build("vamp", num_pseudo_inputs=5)
    z = torch.randn(3, D)
    q = guide.posterior(prior.pseudo_inputs)
    by_hand = torch.logsumexp(q.log_prob(z.unsqueeze(1)), -1) - math.log(5)
    torch.testing.assert_close(prior().log_prob(z), by_hand)
    assert prior.pseudo_inputs.shape == (5, 64)
    assert (prior.pseudo_inputs >= 0).all() and (prior.pseudo_inputs <= 1).all()
    assert (
        make_prior("vamp", D, data_dim=64, posterior=guide.posterior).raw_pseudo_inputs.shape[0]
        == 500
    )  # the published protocol's K


def test_vamp_prior_needs_the_guide():
    with pytest.raises(ValueError, match="posterior=guide.posterior"):
        make_prior("vamp", D, data_dim=64, posterior=None)


def test_vamp_prior_trains_pseudo_inputs_and_registers_the_encoder_once(digits, device):
    pyro.clear_param_store()
    guide = build_guide(64, D, "diagonal", (16,))
    model = build_vae(
        64,
        D,
        (16,),
        prior="vamp",
        posterior=guide.posterior,
        prior_options={"num_pseudo_inputs": 8},
    )
    before = model.prior.raw_pseudo_inputs.detach().clone()
    fit(model, guide, digits, epochs=2, progress=False, device=device)
    before = before.to(device)
    assert not torch.equal(before, model.prior.raw_pseudo_inputs.detach())
    names = list(pyro.get_param_store().keys())
    encoder_tensors = [pyro.param(n) for n in names if ".encoder." in n or "$$$encoder" in n]
    assert len(encoder_tensors) == len({id(t) for t in encoder_tensors})
    assert not any(n.startswith(model.name) and "encoder" in n for n in names), names
    assert not any("encoder" in key for key in model.state_dict())


@pytest.mark.parametrize("prior_name", ["mog", "dirichlet"])
def test_learnable_prior_parameters_train_with_the_model(prior_name, digits, device):
    family = "dirichlet" if prior_name == "dirichlet" else "diagonal"
    options = {"learnable": True} if prior_name == "dirichlet" else {}
    guide = build_guide(64, D, family, (16,))
    model = build_vae(64, D, (16,), prior=prior_name, prior_options=options)
    before = {n: p.detach().clone() for n, p in model.prior.named_parameters()}
    assert before, "the prior has no learnable parameters"
    fit(model, guide, digits, epochs=2, progress=False, device=device)
    for name, p in model.prior.named_parameters():
        assert p.device.type == device
        assert not torch.equal(before[name].to(device), p.detach()), name


def test_fixed_dirichlet_concentration_is_a_buffer():
    prior, _ = build("dirichlet", concentration=0.3)
    assert not list(prior.parameters())
    torch.testing.assert_close(prior().concentration, torch.full((D,), 0.3))
