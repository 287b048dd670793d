"""The GMVAE: y summed out exactly under TraceEnum_ELBO with KL warm-up, its clusters
found on digits (accuracy by the best one-to-one matching), every estimator on it."""

import pyro
import pytest
import torch

from guides import build_gmvae_guide
from models import build_gmvae
from pyrovae import evaluate, fit
from pyrovae.evaluate import clustering_accuracy, estimate_elbo
from tests.conftest import DEVICES


def test_clustering_accuracy_matches_clusters_to_labels():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert clustering_accuracy(torch.tensor([2, 2, 0, 0, 1, 1]), labels) == 1.0
    assert clustering_accuracy(torch.tensor([0, 0, 0, 0, 0, 0]), labels) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="one length"):
        clustering_accuracy(torch.tensor([0, 1]), labels)


@pytest.fixture(scope="module", params=DEVICES)
def data(request, digits):
    """digits on each available device; the pair is trained there."""
    return digits.to(request.param)


@pytest.fixture(scope="module")
def trained(data):
    pyro.set_rng_seed(0)
    guide = build_gmvae_guide(64, 4, hidden=(64,), num_clusters=10)
    model = build_gmvae(64, 4, (64,), num_clusters=10)
    history = fit(
        model,
        guide,
        data,
        device=data.train.device.type,
        objective="TraceEnum_ELBO",
        epochs=30,
        warmup_epochs=5,
        learning_rate=3e-3,
        progress=False,
    )
    return model, guide, history


def test_gmvae_trains_with_warmup_and_finds_the_digits(trained, data, digits):
    model, guide, history = trained
    assert history.beta[0] < 1 and history.validation_elbo[-1] > history.validation_elbo[0] + 5
    clusters = guide.cluster_logits(data.test).argmax(-1).cpu()
    accuracy = clustering_accuracy(clusters, digits.labels["test"])
    shuffled = clustering_accuracy(clusters, digits.labels["test"][torch.randperm(225)])
    # chance (the same clusters against shuffled labels) is about 0.2. Measured over seeds
    # 0-3: 0.48-0.57 on the CPU, 0.39-0.55 on an H100 (seed 0, this test's, gave 0.39 there)
    assert accuracy > 0.35 and accuracy > shuffled + 0.15, (accuracy, shuffled)


def test_estimators_sum_the_cluster_out(trained, data):
    model, guide, _ = trained
    x = data.test[:50]
    log_px = evaluate.log_likelihood(model, guide, x, 200)
    bound = evaluate.elbo(model, guide, x, 20)
    assert log_px.mean() > bound.mean()
    # the enumerated ELBO agrees with TraceEnum_ELBO's own estimate of it
    pyro.set_rng_seed(2)
    enum = estimate_elbo(model, guide, x, "TraceEnum_ELBO", num_particles=50)
    assert bound.mean().item() == pytest.approx(enum, abs=0.1)
    units = evaluate.active_units(guide, x)
    assert "discrete" in units["sites"]["y"]["undefined"] and units["sites"]["z"]["active"] >= 1


def test_gmvae_refuses_a_registry_prior():
    with pytest.raises(ValueError, match="its own mixture"):
        build_gmvae(64, 4, prior="vamp")
