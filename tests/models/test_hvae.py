"""The two-layer hierarchical VAE runs through every estimator and diagnostic, per site
and by its own site names, with any registered prior on the top layer."""

import math

import pyro
import pytest
import torch

from guides import build_hierarchical_guide
from models import ConditionalNormal, build_hvae
from pyrovae import diagnostics, evaluate, fit
from pyrovae.evaluate import estimate_elbo
from tests.conftest import DEVICES


@pytest.fixture(scope="module", params=DEVICES)
def data(request, digits):
    """digits on each available device; the pair is trained there."""
    return digits.to(request.param)


@pytest.fixture(scope="module")
def trained(data):
    pyro.set_rng_seed(0)
    guide = build_hierarchical_guide(64, 3, "diagonal", (64,), bottom_dim=4)
    model = build_hvae(
        64,
        3,
        (64,),
        "vamp",
        posterior=guide.posterior,
        bottom_dim=4,
        prior_options={"num_pseudo_inputs": 20},
    )
    device = data.train.device.type
    fit(model, guide, data, epochs=15, learning_rate=3e-3, progress=False, device=device)
    return model, guide


def test_every_estimator_runs_per_site(trained, data):
    model, guide = trained
    x = data.test[:60]
    log_px = evaluate.log_likelihood(model, guide, x, 300)
    elbo = evaluate.elbo(model, guide, x, 20)
    assert log_px.shape == elbo.shape == (60,)
    assert (log_px.mean() > elbo.mean()).item()  # the IS estimate tightens the bound
    parts = evaluate.kl_decomposition(model, guide, x, num_samples=5)
    assert set(parts.sites) == {"z1", "z2"}
    assert parts.sites["z1"]["avg_kl"] + parts.sites["z2"]["avg_kl"] == pytest.approx(parts.avg_kl)
    assert "latent parents" in parts.sites["z1"]["undefined"]  # p(z1 | z2), q(z1 | x, z2)
    top = parts.sites["z2"]
    assert top["mutual_info"] + top["marginal_kl"] == pytest.approx(top["avg_kl"])
    assert 0 <= parts.mutual_info <= parts.log_n + 0.1
    units = evaluate.active_units(guide, x)
    assert set(units["sites"]) == {"z1", "z2"}
    assert (
        len(units["sites"]["z1"]["variances"]) == 4 and len(units["sites"]["z2"]["variances"]) == 3
    )
    assert units["active"] == units["sites"]["z1"]["active"] + units["sites"]["z2"]["active"]
    corr = evaluate.posterior_correlation(guide, x)
    assert set(corr["sites"]) == {"z1", "z2"}
    for source in ("prior", "aggregate"):
        drawn = evaluate.sample(model, guide, 7, x, source=source)
        assert drawn.latents["z1"].shape == (7, 4) and drawn.latents["z2"].shape == (7, 3)
        assert drawn.mean.shape == (7, 64)


def test_datatree_names_variables_after_the_sites(trained, data):
    model, guide = trained
    tree = diagnostics.to_datatree(model, guide, data.test[:10], 40)
    assert set(tree["posterior"].data_vars) == {"z1", "z2"}
    assert tree["posterior"]["z1"].shape == (1, 40, 10, 4)
    assert set(tree["log_likelihood"].data_vars) == {"x"}
    khat = diagnostics.psis_khat(diagnostics.log_ratios(tree))
    assert khat.shape == (10,)


def test_mean_field_elbo_is_unbiased_when_the_guide_follows_the_models_order(trained, data):
    """q(z2|x) q(z1|x,z2) samples in the model's order, so TraceMeanField_ELBO's
    conditional KLs are taken at the same z2 and estimate the same ELBO as Trace_ELBO."""
    model, guide = trained
    x = data.validation
    pyro.set_rng_seed(1)
    trace = estimate_elbo(model, guide, x, "Trace_ELBO", num_particles=200)
    mean_field = estimate_elbo(model, guide, x, "TraceMeanField_ELBO", num_particles=200)
    assert mean_field == pytest.approx(trace, abs=0.05)


def test_the_conditional_scale_stays_under_its_ceiling_for_any_z2():
    conditional = ConditionalNormal(3, 4, (16,), "relu", min_scale=0.05, max_scale=math.e)
    with torch.no_grad():
        conditional.net[-1].bias[4:] = 1e4
    scale = conditional(torch.randn(5, 3) * 100).base_dist.scale
    assert scale.max().item() <= math.e and scale.min().item() > 2.7
    assert "max_scale=2.71828" in repr(conditional)
    unbounded = ConditionalNormal(3, 4, (16,), "relu", min_scale=0.05)
    unbounded.load_state_dict(conditional.state_dict())
    assert unbounded(torch.randn(5, 3)).base_dist.scale.min().item() > 1e3  # as before
    with pytest.raises(ValueError, match="max_scale must be above min_scale of p"):
        ConditionalNormal(3, 4, (16,), "relu", min_scale=0.05, max_scale=0.01)


def test_a_negative_floor_on_the_conditional_scale_is_refused():
    with pytest.raises(ValueError, match="min_scale of p\\(z1 \\| z2\\) must be >= 0, got -1"):
        build_hvae(64, 3, (16,), conditional_min_scale=-1.0)


@pytest.mark.parametrize("device", DEVICES)
def test_the_published_layout_trains_recorded_and_is_evaluated(digits, device):
    """q(z1 | x, z2) with its own branch of x, p(x | z1, z2) with a branch per layer: the
    pair trains from its recorded loss and runs inside the estimators' sample plates."""
    data = digits.to(device)
    pyro.set_rng_seed(0)
    hidden = (32, 32)
    bounds = {"min_scale": 0.05, "max_scale": math.e}  # the published range, recorded too
    guide = build_hierarchical_guide(
        64,
        3,
        "diagonal",
        hidden,
        "gated",
        bottom_dim=4,
        bottom_branches=True,
        bottom_min_scale=0.05,
        bottom_max_scale=math.e,
        **bounds,
    )
    model = build_hvae(
        64,
        3,
        hidden,
        "vamp",
        activation="gated",
        posterior=guide.posterior,
        bottom_dim=4,
        decoder_branches=True,
        prior_options={"num_pseudo_inputs": 10},
        likelihood_options={"min_probability": 1e-5},
        conditional_min_scale=0.05,
        conditional_max_scale=math.e,
    )
    assert guide.bottom_net.first_branch[0].linear.in_features == 64  # x itself
    assert guide.bottom_net.second_branch[0].linear.in_features == 3  # z2
    assert model.decoder.first_branch[0].linear.in_features == 4  # z1
    assert model.decoder.second_branch[0].linear.in_features == 3  # z2
    history = fit(model, guide, data, epochs=4, learning_rate=3e-3, progress=False, device=device)
    assert history.replayed_steps > 0
    assert history.validation_elbo[-1] > history.validation_elbo[0]
    x = data.test[:30]
    log_px = evaluate.log_likelihood(model, guide, x, 100)
    elbo = evaluate.elbo(model, guide, x, 10)
    assert log_px.shape == elbo.shape == (30,)
    assert torch.isfinite(log_px).all()
    assert (log_px.mean() > elbo.mean()).item()


def test_a_branched_decoder_needs_a_hidden_layer():
    with pytest.raises(ValueError, match="decoder_branches needs at least one hidden layer"):
        build_hvae(64, 3, (), decoder_branches=True)
