import math
import time

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

from guides import build_guide
from models import build_vae
from pyrovae.data import make_splits
from pyrovae.evaluate import estimate_elbo
from pyrovae.train import FitConfig, FitHistory, SiteScale, fit, load_checkpoint
from tests.conftest import requires_cuda

FAST = dict(epochs=6, batch_size=100, learning_rate=3e-3, progress=False)


def small_pair(data_dim=64, latent_dim=4, family="diagonal", likelihood="bernoulli"):
    model = build_vae(data_dim, latent_dim, (64,), likelihood=likelihood)
    guide = build_guide(data_dim, latent_dim, family, (64,))
    return model, guide


@pytest.mark.parametrize("objective", ["Trace_ELBO", "TraceMeanField_ELBO"])
def test_training_improves_validation_elbo(digits, objective, device):
    model, guide = small_pair()
    before = estimate_elbo(model, guide, digits.validation, objective, num_particles=5)
    history = fit(model, guide, digits, objective=objective, device=device, **FAST)
    validation = digits.validation.to(device)
    after = estimate_elbo(model, guide, validation, objective, num_particles=5)
    assert after > before + 10, (before, after)  # about -45 -> -28 nats per image
    assert history.validation_elbo[-1] > history.validation_elbo[0]
    assert len(history.epoch) == FAST["epochs"] and all(s > 0 for s in history.seconds)


def test_each_epoch_is_logged_for_runs_without_a_progress_bar(digits, caplog):
    model, guide = small_pair()
    with caplog.at_level("INFO", logger="pyrovae.train.loop"):
        history = fit(model, guide, digits, **{**FAST, "epochs": 2})
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 2
    assert f"validation ELBO {history.validation_elbo[1]:.4g}" in lines[1]


def test_history_times_the_whole_epoch_and_old_histories_still_load(digits):
    model, guide = small_pair()
    history = fit(model, guide, digits, **{**FAST, "epochs": 2})
    # the whole epoch holds its training steps and the validation ELBO after them
    assert len(history.epoch_seconds) == 2
    assert all(w > s > 0 for w, s in zip(history.epoch_seconds, history.seconds, strict=True))
    # a history saved before epoch_seconds existed: those epochs read NaN, in place
    saved = history.to_dict()
    del saved["epoch_seconds"]
    old = FitHistory.from_dict(saved)
    assert len(old.epoch_seconds) == len(old.epoch) and all(map(math.isnan, old.epoch_seconds))


def test_trace_and_meanfield_elbo_estimate_the_same_quantity(digits):
    model, guide = small_pair()
    fit(model, guide, digits, epochs=3, progress=False)
    x = digits.test[:50]
    draws = {
        name: torch.tensor([estimate_elbo(model, guide, x, name) for _ in range(300)])
        for name in ("Trace_ELBO", "TraceMeanField_ELBO")
    }
    a, b = draws["Trace_ELBO"], draws["TraceMeanField_ELBO"]
    stderr = math.sqrt(a.var() / len(a) + b.var() / len(b))
    assert abs(a.mean() - b.mean()) < 4 * stderr, (a.mean(), b.mean(), stderr)


def test_resume_continues_to_the_same_parameters(digits, tmp_path, device):
    config = FitConfig(
        epochs=4,
        batch_size=200,
        learning_rate=3e-3,
        progress=False,
        seed=3,
        warmup_epochs=2,
        device=device,
    )
    pyro.set_rng_seed(1)  # same initial weights for all three runs
    model_a, guide_a = small_pair()
    history_a = fit(model_a, guide_a, digits, config)

    ckpt = tmp_path / "run.pt"
    pyro.set_rng_seed(1)
    model_b, guide_b = small_pair()
    fit(model_b, guide_b, digits, config, epochs=2, checkpoint=ckpt)
    assert load_checkpoint(ckpt).epoch == 2
    pyro.set_rng_seed(2)  # resuming must not depend on the fresh instance's init
    model_c, guide_c = small_pair()  # a fresh process would build new instances
    history_c = fit(model_c, guide_c, digits, config, checkpoint=ckpt, resume=ckpt)

    assert history_c.epoch == [1, 2, 3, 4]
    assert history_c.validation_elbo == pytest.approx(history_a.validation_elbo, abs=1e-5)
    for a, c in zip(
        [*model_a.parameters(), *guide_a.parameters()],
        [*model_c.parameters(), *guide_c.parameters()],
        strict=True,
    ):
        assert torch.allclose(a, c, atol=1e-6)


def test_site_scale_applies_minibatch_and_warmup_scaling_to_model_and_guide(digits):
    model, guide = small_pair()
    x = digits.test[:10]
    scaler = SiteScale(data_scale=7.0, beta=0.25)
    guide_trace = poutine.trace(scaler(guide)).get_trace(x)
    model_trace = poutine.trace(poutine.replay(scaler(model), trace=guide_trace)).get_trace(x)
    assert guide_trace.nodes["z"]["scale"] == pytest.approx(7.0 * 0.25)
    assert model_trace.nodes["z"]["scale"] == pytest.approx(7.0 * 0.25)
    assert model_trace.nodes["x"]["scale"] == pytest.approx(7.0)


def test_minibatch_loss_estimates_the_full_data_elbo(digits):
    """With scale N/B, the mean minibatch loss equals the full-data loss (TraceMeanField
    makes the KL exact, so only reconstruction noise remains)."""
    model, guide = small_pair()
    x = digits.test
    elbo = pyro.infer.TraceMeanField_ELBO()
    full = torch.tensor([elbo.loss(model, guide, x) for _ in range(100)]).mean()
    scaler = SiteScale(data_scale=x.shape[0] / 25)
    batches = torch.tensor(
        [
            elbo.loss(scaler(model), scaler(guide), x[i : i + 25])
            for _ in range(10)
            for i in range(0, x.shape[0], 25)
        ]
    )
    assert abs(batches.mean() - full) < 0.01 * abs(full)


def test_warmup_schedule():
    config = FitConfig(warmup_epochs=4)
    assert [config.beta(e) for e in range(1, 7)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert FitConfig().beta(1) == 1.0


def test_early_stopping_restores_the_best_epoch(digits, tmp_path):
    model, guide = small_pair()
    path = tmp_path / "run.pt"
    history = fit(
        model,
        guide,
        digits,
        epochs=40,
        patience=2,
        learning_rate=5e-2,
        progress=False,
        checkpoint=path,
    )
    # lr=0.05 overfits the 1,347 digits within a few epochs: measured to stop every time
    assert history.stopped_early and len(history.epoch) < 40
    assert history.best_epoch == len(history.epoch) - 2  # two bad epochs after the best
    assert history.validation_elbo[history.best_epoch - 1] == max(history.validation_elbo)
    # the pair holds the best epoch's tensors exactly, not the last epoch's
    saved = load_checkpoint(path)
    best_guide = saved.monitors["early_stopping"]["best_state"]["guide"]
    for name, tensor in guide.state_dict().items():
        assert torch.equal(tensor, best_guide[name]), name
    assert any(not torch.equal(t, saved.guide[n]) for n, t in guide.state_dict().items())
    # the last checkpoint records the stop (it once said "still running"), and resuming
    # a stopped run trains nothing more: it returns the same history and the best tensors
    assert saved.history["stopped_early"] and saved.epoch == len(history.epoch)
    model_b, guide_b = small_pair()
    resumed = fit(
        model_b,
        guide_b,
        digits,
        epochs=40,
        patience=2,
        learning_rate=5e-2,
        progress=False,
        resume=path,
        checkpoint=path,
    )
    assert resumed.stopped_early and resumed.epoch == history.epoch
    assert load_checkpoint(path).epoch == saved.epoch
    for name, tensor in guide_b.state_dict().items():
        assert torch.equal(tensor, best_guide[name]), name


def test_two_models_never_share_parameters(digits):
    model_a, guide_a = small_pair()
    model_b, guide_b = small_pair()
    assert model_a.name != model_b.name and guide_a.name != guide_b.name
    before = [p.detach().clone() for p in model_b.parameters()]
    fit(model_a, guide_a, digits, epochs=1, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(before, model_b.parameters(), strict=True))


def test_a_hand_written_function_pair_trains(digits):
    decoder = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.ReLU(), torch.nn.Linear(32, 64))
    encoder = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 6))

    def model(x):
        pyro.module("hand_decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(3), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("hand_encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            loc, raw = encoder(x).split(3, -1)
            pyro.sample("z", dist.Normal(loc, torch.nn.functional.softplus(raw)).to_event(1))

    before = estimate_elbo(model, guide, digits.validation)
    history = fit(model, guide, digits, **FAST)
    assert history.validation_elbo[-1] > before + 10


# ----------------------------------------------------------------------- bad input


def test_nan_and_empty_data_are_rejected(digits):
    model, guide = small_pair()
    bad = digits.train.clone()
    bad[3, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        fit(model, guide, bad, progress=False)
    with pytest.raises(ValueError, match="empty"):
        fit(model, guide, torch.zeros(0, 64), progress=False)


def test_feature_count_mismatch_is_rejected(digits):
    model, guide = small_pair(data_dim=784)
    with pytest.raises(ValueError, match="expects 784 features .* has 64"):
        fit(model, guide, digits, progress=False)


def test_latent_site_name_mismatch_is_rejected(digits):
    model, _ = small_pair()
    encoder = torch.nn.Linear(64, 8)

    def guide(x):
        pyro.module("mismatch_encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            loc, raw = encoder(x).split(4, -1)
            pyro.sample("w", dist.Normal(loc, raw.exp()).to_event(1))

    with pytest.raises(ValueError, match=r"missing from guide: \['z'\].*only in guide: \['w'\]"):
        fit(model, guide, digits, progress=False)


def test_values_outside_the_likelihood_support_are_rejected(digits_gray):
    model, guide = small_pair(likelihood="bernoulli")
    with pytest.raises(ValueError, match="outside the support.*binarize='dynamic'"):
        fit(model, guide, digits_gray, progress=False)
    model, guide = small_pair(likelihood="continuous-bernoulli")
    negative = make_splits("neg", digits_gray.train - 0.5, None, None, binarize="none")
    with pytest.raises(ValueError, match="outside the support"):
        fit(model, guide, negative, progress=False)


def test_a_time_limit_ends_the_call_at_an_epoch_boundary_and_resume_goes_on(digits, tmp_path):
    config = FitConfig(epochs=3, batch_size=200, progress=False, seed=3, warmup_epochs=2)
    pyro.set_rng_seed(1)
    model_a, guide_a = small_pair()
    whole = fit(model_a, guide_a, digits, config)
    assert not whole.time_limited
    ckpt = tmp_path / "run.pt"
    pyro.set_rng_seed(1)
    model_b, guide_b = small_pair()
    # any epoch outlasts a millisecond: the first always runs, then the call ends
    limited = fit(model_b, guide_b, digits, config, checkpoint=ckpt, time_limit=1e-3)
    assert limited.time_limited and limited.epoch == [1]
    assert load_checkpoint(ckpt).epoch == 1
    model_c, guide_c = small_pair()
    resumed = fit(model_c, guide_c, digits, config, checkpoint=ckpt, resume=ckpt)
    assert resumed.epoch == [1, 2, 3] and not resumed.time_limited
    assert resumed.validation_elbo == whole.validation_elbo
    for a, c in zip(
        [*model_a.parameters(), *guide_a.parameters()],
        [*model_c.parameters(), *guide_c.parameters()],
        strict=True,
    ):
        assert torch.equal(a, c)


def test_the_time_limit_allows_an_epoch_only_if_it_ends_in_time():
    from pyrovae.train.loop import _out_of_time

    now = time.perf_counter()
    # called 8 s ago with a 10 s limit: a 3 s epoch would end late, a 1 s epoch in time
    assert _out_of_time(10.0, now - 8.0, [3.0, 3.0], None, "cpu")
    assert not _out_of_time(10.0, now - 8.0, [1.0, 1.0], None, "cpu")
    assert not _out_of_time(10.0, now - 80.0, [], None, "cpu")  # the first epoch always runs
    assert not _out_of_time(None, now - 80.0, [3.0], None, "cpu")


@pytest.mark.parametrize(
    "override, message",
    [
        ({"objective": "ELBO9000"}, "unknown objective"),
        ({"epochs": 0}, "epochs must be"),
        ({"learning_rate": -1.0}, "learning_rate must be"),
        ({"bogus": 1}, "unknown FitConfig fields"),
        ({"time_limit": 0}, "time_limit must be"),
        ({"time_limit": "1h"}, "time_limit must be"),
        ({"time_limit": True}, "time_limit must be"),
    ],
)
def test_bad_config_is_rejected(digits, override, message):
    model, guide = small_pair()
    with pytest.raises(ValueError, match=message):
        fit(model, guide, digits, progress=False, **override)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_cuda_request_without_a_gpu_says_so(digits):
    model, guide = small_pair()
    with pytest.raises(ValueError, match="CUDA is not available"):
        fit(model, guide, digits, device="cuda", progress=False)


@requires_cuda
@pytest.mark.parametrize("family", ["diagonal", "full", "mixture"])
def test_trains_on_cuda(digits, family):
    model, guide = small_pair(family=family)
    history = fit(model, guide, digits, device="cuda", epochs=1, progress=False)
    assert next(model.parameters()).is_cuda and next(guide.parameters()).is_cuda
    assert math.isfinite(history.validation_elbo[-1])
