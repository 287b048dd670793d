import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from guides import build_guide
from models import build_vae
from pyrovae.evaluate import (
    active_units,
    aggregate_log_density,
    elbo,
    kl_decomposition,
    log_likelihood,
    log_weights,
    sample,
)
from pyrovae.train import fit
from tests.pyrovae.evaluate.ppca import PPCA


@pytest.fixture(scope="module")
def ppca():
    return PPCA()


@pytest.fixture(scope="module")
def ppca_x(ppca):
    return ppca.sample_x(40)


def test_log_weights_are_per_data_point(ppca, ppca_x):
    w = log_weights(
        ppca.model, ppca.diagonal_guide, ppca_x, num_samples=250, batch_size=16, sample_chunk=60
    )
    assert w.shape == (250, 40)
    assert torch.isfinite(w).all()
    # Each column is that point's own ratio: permuting rows permutes columns.
    pyro.set_rng_seed(0)
    a = log_weights(ppca.model, ppca.exact_guide, ppca_x[[3, 7]], num_samples=5)
    expected = ppca.log_marginal(ppca_x[[3, 7]])
    torch.testing.assert_close(a, expected.expand(5, 2), rtol=1e-4, atol=1e-4)


def test_log_likelihood_converges_to_the_exact_value(ppca, ppca_x):
    exact = ppca.log_marginal(ppca_x)
    estimate = log_likelihood(ppca.model, ppca.diagonal_guide, ppca_x, num_samples=5000)
    assert (estimate - exact).abs().max() < 0.05
    assert (estimate - exact).mean().abs() < 0.01


def test_elbo_le_iwae_k_le_log_px_and_iwae_increases_with_k(ppca, ppca_x):
    exact = ppca.log_marginal(ppca_x).mean()
    bounds = [elbo(ppca.model, ppca.diagonal_guide, ppca_x, num_samples=2000).mean()]
    for k in (2, 8, 64):
        # average the IWAE_k estimator over repeats to estimate its expectation
        reps = torch.stack(
            [
                log_likelihood(ppca.model, ppca.diagonal_guide, ppca_x, num_samples=k)
                for _ in range(20)
            ]
        )
        bounds.append(reps.mean())
    assert all(a < b for a, b in zip(bounds, bounds[1:], strict=False)), bounds
    assert bounds[-1] <= exact + 0.01
    assert exact - bounds[0] > 0.1  # the diagonal guide leaves a real gap


def test_exact_posterior_makes_the_elbo_tight(ppca, ppca_x):
    exact = ppca.log_marginal(ppca_x)
    torch.testing.assert_close(
        elbo(ppca.model, ppca.exact_guide, ppca_x, num_samples=3), exact, rtol=1e-4, atol=1e-4
    )


def independent_mutual_information(ppca, x, num_samples=4000, seed=0):
    """I(n; z) of the diagonal PPCA guide, computed here without the library: z ~ q(z|x_n),
    then mean of log q(z|x_n) - log (1/N) sum_m q(z|x_m)."""
    generator = torch.Generator().manual_seed(seed)
    loc = ppca.posterior_loc(x)  # (N, k)
    std = ppca.post_cov.diagonal().sqrt() * 1.6
    z = loc + std * torch.randn(num_samples, *loc.shape, generator=generator)  # (S, N, k)
    log_q = dist.Normal(loc, std).log_prob(z[:, :, None, :]).sum(-1)  # (S, N, N): z_n under q_m
    own = log_q.diagonal(dim1=1, dim2=2)
    aggregate = torch.logsumexp(log_q, dim=-1) - math.log(x.shape[0])
    return (own - aggregate).mean().item()


def test_kl_decomposition_matches_an_independent_computation(ppca, ppca_x):
    parts = kl_decomposition(ppca.model, ppca.diagonal_guide, ppca_x, num_samples=200)
    # I(n; z) from an estimator written here: a wrong aggregate (e.g. leaving out the
    # point's own component, or the log N) moves it by far more than 0.05 nats
    assert parts.mutual_info == pytest.approx(
        independent_mutual_information(ppca, ppca_x), abs=0.05
    )
    assert 0.5 < parts.mutual_info < parts.log_n
    assert parts.marginal_kl > -3 * parts.marginal_kl_se
    assert parts.log_n == pytest.approx(math.log(40))
    # Exact avg KL of N(m, S) || N(0, I): 0.5 (tr S + m^T m - k - log|S|)
    std = ppca.post_cov.diagonal().sqrt() * 1.6
    m = ppca.posterior_loc(ppca_x)
    exact_kl = 0.5 * ((std**2).sum() + (m**2).sum(-1) - 2 - 2 * std.log().sum())
    assert parts.avg_kl == pytest.approx(exact_kl.mean().item(), abs=4 * parts.avg_kl_se)


def test_mutual_information_vanishes_when_q_ignores_x(ppca, ppca_x):
    def constant_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x.new_full((2,), 0.3), 0.8).to_event(1))

    parts = kl_decomposition(ppca.model, constant_guide, ppca_x, num_samples=50)
    assert abs(parts.mutual_info) < 1e-4
    assert parts.marginal_kl == pytest.approx(parts.avg_kl, abs=1e-4)


def test_aggregate_density_is_the_mixture(ppca, ppca_x):
    z = torch.randn(7, 2)
    cov = ppca.post_cov.diagonal().sqrt() * 1.6
    comps = dist.Normal(ppca.posterior_loc(ppca_x), cov).to_event(1)
    expected = torch.logsumexp(comps.log_prob(z.unsqueeze(1)), 1) - math.log(40)
    torch.testing.assert_close(aggregate_log_density(ppca.diagonal_guide, ppca_x, z), expected)


def test_active_units_counts_dimensions_that_vary(ppca, ppca_x):
    result = active_units(ppca.diagonal_guide, ppca_x)
    assert result["active"] == 2

    def dead_guide(x):  # second coordinate ignores x
        loc = torch.stack([x[:, 0], torch.zeros_like(x[:, 0])], -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))

    assert active_units(dead_guide, ppca_x)["active"] == 1


def test_sampling_from_prior_and_aggregate(ppca, ppca_x):
    prior = sample(ppca.model, ppca.diagonal_guide, 4000, ppca_x, source="prior")
    assert prior.z.shape == (4000, 2) and prior.mean.shape == (4000, 6)
    assert prior.z.mean(0).abs().max() < 0.1 and (prior.z.std(0) - 1).abs().max() < 0.1
    agg = sample(ppca.model, ppca.diagonal_guide, 4000, ppca_x, source="aggregate")
    expected_mean = ppca.posterior_loc(ppca_x).mean(0)
    assert (agg.z.mean(0) - expected_mean).abs().max() < 0.15
    with pytest.raises(ValueError, match="unknown source"):
        sample(ppca.model, ppca.diagonal_guide, 4, ppca_x, source="posterior")


@pytest.mark.parametrize("family", ["diagonal", "full", "lowrank", "mixture", "flow"])
def test_estimators_run_on_every_family(digits, family, device):
    model = build_vae(64, 3, (32,))
    guide = build_guide(64, 3, family, (32,))
    fit(model, guide, digits, epochs=2, progress=False, device=device)
    x = digits.test[:30].to(device)
    ll = log_likelihood(model, guide, x, num_samples=200)
    e = elbo(model, guide, x, num_samples=50)
    assert ll.shape == e.shape == (30,)
    assert (ll > e - 0.5).all()  # IWAE_200 above the ELBO, up to noise
    parts = kl_decomposition(model, guide, x, num_samples=5)
    assert 0 <= parts.mutual_info <= parts.log_n + 1e-5
    assert len(active_units(guide, x)["variances"]) == 3  # counted exactly in the test below
    assert sample(model, guide, 5, x, source="aggregate").mean.shape == (5, 64)


def test_sites_outside_the_data_plate_are_rejected(ppca, ppca_x):
    def model_with_global(x):
        scale = pyro.sample("noise", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ ppca.W.T, scale.unsqueeze(-1)).to_event(1), obs=x)

    def guide_with_global(x):
        pyro.sample("noise", dist.LogNormal(0.0, 0.1))
        ppca.diagonal_guide(x)

    with pytest.raises(ValueError, match="site 'noise' has log_prob shape"):
        log_likelihood(model_with_global, guide_with_global, ppca_x, num_samples=10)


def test_active_units_count_exactly_the_units_that_follow_x(digits):
    """Two of four latent units move with x (by known amounts), two never do."""
    spread = torch.tensor([3.0, 0.5, 0.0, 0.0])

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            signal = (x.mean(-1, keepdim=True) - 0.3) * 10  # varies across digits
            pyro.sample("z", dist.Normal(signal * spread, 0.5).to_event(1))

    result = active_units(guide, digits.test)
    assert result["active"] == 2
    variances = torch.as_tensor(result["variances"])
    assert variances[2:].abs().max() < 1e-6 and (variances[:2] > 0.01).all()


def test_each_site_density_is_computed_once_per_chunk(monkeypatch):
    """A VampPrior's log density (a mixture over its pseudo-inputs' posteriors) costs as
    much per draw as the decoder under a full-covariance guide; it was computed twice per
    chunk, once for log p(z) and once for log p(x, z)."""
    from pyrovae.distributions.mixture import SharedComponentMixture
    from pyrovae.evaluate.importance import site_log_probs

    pyro.set_rng_seed(0)
    guide = build_guide(64, 3, "full", (16,))
    model = build_vae(
        64, 3, (16,), "vamp", posterior=guide.posterior, prior_options={"num_pseudo_inputs": 8}
    )
    x = torch.bernoulli(torch.rand(5, 64))
    calls = []
    real = SharedComponentMixture.log_prob
    monkeypatch.setattr(
        SharedComponentMixture, "log_prob", lambda self, v: calls.append(1) or real(self, v)
    )
    with torch.no_grad():
        parts = site_log_probs(model, guide, x, 7)
    assert len(calls) == 1
    likelihood = parts.log_joint - parts.prior_sites["z"]
    assert parts.log_prior.shape == likelihood.shape == (7, 5)
    # log p(x, z) = log p(z) + log p(x | z), the latter from the decoder by hand
    logits = model.decoder(parts.latents["z"])
    by_hand = -torch.nn.functional.binary_cross_entropy_with_logits(
        logits, x.expand(7, 5, 64), reduction="none"
    ).sum(-1)
    torch.testing.assert_close(likelihood, by_hand.detach())


def test_a_single_sites_aggregate_density_is_computed_once(ppca, ppca_x, monkeypatch):
    """kl_decomposition's cost is N^2 S evaluations of log q for the aggregate posterior;
    with one latent site the per-site figures reuse the joint ones instead of paying it
    twice, and equal them."""
    import pyrovae.evaluate.estimators as estimators

    calls = []
    real = estimators.aggregate_log_density
    monkeypatch.setattr(
        estimators,
        "aggregate_log_density",
        lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs),
    )
    parts = kl_decomposition(ppca.model, ppca.diagonal_guide, ppca_x, num_samples=20)
    assert len(calls) == 1
    (site,) = parts.sites.values()
    assert site["marginal_kl"] == parts.marginal_kl
    assert site["mutual_info"] == pytest.approx(parts.mutual_info, abs=1e-9)
