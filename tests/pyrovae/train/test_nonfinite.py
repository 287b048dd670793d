"""NaN never reaches the parameters: a non-finite loss or gradient is skipped before the
optimizer step; several in a row stop training with the pair restored to the start of the
epoch. Observed before: the loss was checked after the step, so the caller's model was left
full of NaN, and an lr=inf checkpoint held 9,160 non-finite values."""

import math

import pyro
import pytest
import torch

from guides import build_guide
from models import build_vae
from pyrovae.errors import TrainingDiverged
from pyrovae.train import DivergenceMonitor, fit, load_checkpoint


class PoisonedModel:
    """The VAE's model with a factor of ``value`` (NaN unless given) on the listed calls on
    100-row training batches (validation, in chunks of the batch size too, runs without
    gradients and is never poisoned). About 5 such calls precede the first step (probes);
    digits then gives 13 full batches per epoch."""

    def __init__(self, model, poisoned, value=math.nan):
        self.model, self.poisoned, self.calls, self.value = model, set(poisoned), 0, value

    def __call__(self, x):
        self.model(x)
        if x.shape[0] != 100 or not torch.is_grad_enabled():
            return
        self.calls += 1
        if self.calls in self.poisoned:
            pyro.factor("poison", x.new_tensor(self.value))


def test_isolated_non_finite_steps_are_skipped_and_counted(digits, device):
    model = build_vae(64, 2, (16,)).to(device)  # the wrapper is no nn.Module: fit cannot move it
    guide = build_guide(64, 2, "diagonal", (16,))
    poisoned = PoisonedModel(model, poisoned={12, 20})  # two single bad steps
    history = fit(poisoned, guide, digits, epochs=2, progress=False, device=device)
    assert history.skipped_steps == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(math.isfinite(v) for v in history.validation_elbo)


@pytest.mark.parametrize(
    "value, reason",
    [
        (math.nan, r"epoch 2: .*3 steps in a row.*start of epoch 2"),
        # a finite term that pays off hugely, stopped at once rather than trained on until
        # its gradient overflows (seen: a guide's log q by float32's triangular solve, one
        # step far below zero after 40 ordinary ones)
        (1e12, r"epoch 2: the loss plunged at step 3 to -"),
    ],
    ids=["non-finite steps in a row", "a loss that plunges"],
)
def test_a_failing_epoch_stops_training_and_restores_the_pair(digits, tmp_path, value, reason):
    model = build_vae(64, 2, (16,))
    guide = build_guide(64, 2, "diagonal", (16,))
    first_bad = 5 + 13 + 3  # the probes, epoch 1's 13 full batches, then into epoch 2
    poisoned = PoisonedModel(model, poisoned=range(first_bad, first_bad + 100), value=value)
    checkpoint = tmp_path / "run.pt"
    with pytest.raises(TrainingDiverged, match=reason):
        fit(poisoned, guide, digits, epochs=3, progress=False, checkpoint=checkpoint)
    # the pair is exactly as it was at the end of epoch 1, which is what was checkpointed
    saved = load_checkpoint(checkpoint)
    assert saved.epoch == 1
    for name, tensor in guide.state_dict().items():
        assert torch.equal(tensor, saved.guide[name]), name


def test_an_infinite_learning_rate_is_refused_before_training(digits):
    model, guide = build_vae(64, 2, (16,)), build_guide(64, 2, "diagonal", (16,))
    with pytest.raises(ValueError, match="learning_rate must be finite"):
        fit(model, guide, digits, learning_rate=math.inf, progress=False)


def finite_everywhere(checkpoint) -> bool:
    saved = load_checkpoint(checkpoint)
    tensors = [*saved.params.values(), *saved.guide.values(), *saved.model.values()]
    for state in saved.optimizer["state"].values():
        tensors += [v for v in state.values() if torch.is_tensor(v)]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def test_the_divergence_test_fires_on_a_plunge_as_seen():
    """Per-point losses of the vamp+full run of the Fashion-MNIST protocol in its second
    epoch, before its guide scored its own draws exactly: ordinary, then one step at
    -2.9e15."""
    monitor = DivergenceMonitor(factor=10.0)
    ordinary = [234.65, 238.04, 244.98, 221.43, 243.26, 239.15, 253.75, 237.97, 248.76]
    assert [monitor.verdict(v) for v in ordinary] == [None] * len(ordinary)
    assert monitor.verdict(-500.0) is None  # 221.43 - 10 * 221.43: still tolerated
    assert monitor.verdict(-2.88e15) == "plunged"
    assert monitor.verdict(1e9) == "exploded"
    assert DivergenceMonitor(factor=None).verdict(-2.88e15) is None


def test_a_huge_learning_rate_is_stopped_as_divergence(digits, tmp_path):
    """Observed before: lr=1e6 trained to an ELBO of about -3.8e29 with no error and saved
    an infinite optimizer state."""
    model, guide = build_vae(64, 2, (16,)), build_guide(64, 2, "diagonal", (16,))
    checkpoint = tmp_path / "run.pt"
    with pytest.raises(TrainingDiverged, match="epoch 1: (training diverged|.*non-finite)"):
        fit(
            model, guide, digits, learning_rate=1e6, epochs=3, progress=False, checkpoint=checkpoint
        )
    assert not checkpoint.exists()  # nothing from the failed epoch was written
    assert all(torch.isfinite(p).all() for p in [*model.parameters(), *guide.parameters()])


def test_the_divergence_test_fires_on_a_finite_blow_up():
    monitor = DivergenceMonitor(factor=10.0)
    losses = [60.0, 45.0, 40.0, 42.0, 38.0]  # ordinary training, minibatch noise included
    assert not any(monitor.diverged(v) for v in losses)
    assert monitor.best == 38.0 and monitor.scale() == 38.0
    assert not monitor.diverged(400.0)  # 38 + 10 * 38 = 418: still tolerated
    assert monitor.diverged(3.8e29)
    assert not DivergenceMonitor(factor=None).diverged(3.8e29)


def test_a_density_loss_near_zero_is_not_mistaken_for_divergence():
    """Measured on a Gaussian VAE of digits gray levels: the best loss reached 1.3 nats
    per point while minibatches still scored up to 14.9; the size-only rule stopped it."""
    monitor = DivergenceMonitor(factor=10.0)
    assert not any(monitor.diverged(v) for v in [120.0, 60.0, 20.0, 5.0, 1.3, 14.9, -2.0])
    assert monitor.scale() == 122.0  # the progress made, 120 - (-2)
    assert monitor.diverged(1e6)


def test_rollback_halves_the_learning_rate_and_finishes(digits, tmp_path, device):
    model, guide = build_vae(64, 2, (16,)), build_guide(64, 2, "diagonal", (16,))
    checkpoint = tmp_path / "run.pt"
    history = fit(
        model,
        guide,
        digits,
        learning_rate=0.5,
        epochs=3,
        on_nan="rollback",
        max_rollbacks=20,
        progress=False,
        checkpoint=checkpoint,
        device=device,
    )
    assert history.rollbacks, "lr=0.5 was expected to need at least one rollback"
    assert history.epoch == [1, 2, 3]
    rates = [r["learning_rate"] for r in history.rollbacks]
    assert rates == [0.5 / 2 ** (i + 1) for i in range(len(rates))]
    assert history.learning_rate[-1] == rates[-1]
    assert all(math.isfinite(v) for v in history.validation_elbo)
    assert finite_everywhere(checkpoint)


def test_rollback_gives_up_after_max_rollbacks(digits):
    model, guide = build_vae(64, 2, (16,)), build_guide(64, 2, "diagonal", (16,))
    with pytest.raises(TrainingDiverged, match="after 2 rollbacks"):
        fit(
            model,
            guide,
            digits,
            learning_rate=1e6,
            epochs=2,
            on_nan="rollback",
            max_rollbacks=2,
            progress=False,
        )


class NaNOnValidation:
    """The VAE's model with a NaN factor on the validation pass only: its chunks (of the
    training batch size) run without gradients, and the split's last chunk has 25 rows."""

    def __init__(self, model):
        self.model = model

    def __call__(self, x):
        self.model(x)
        if x.shape[0] == 25 and not torch.is_grad_enabled():
            pyro.factor("poison", x.new_tensor(math.nan))


def test_a_non_finite_validation_elbo_stops_training(digits):
    model, guide = build_vae(64, 2, (16,)), build_guide(64, 2, "diagonal", (16,))
    with pytest.raises(TrainingDiverged, match="epoch 1: the validation ELBO is nan"):
        fit(NaNOnValidation(model), guide, digits, epochs=3, progress=False)
