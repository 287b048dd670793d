"""jit=True: the recorded loss gives the Python loss's values and gradients from the same
random draws, for every traceable objective and the guide families with their own
gradients (full covariance under a VampPrior, flows, and the draws that are custom
operators: the von Mises-Fisher's rejection sampler with its implicit gradient, the
Dirichlet's and Power Spherical's implicit Gamma gradients, the mixture's pathwise
gradient); recording consumes no random
numbers, batch shapes and scales are inputs, and what cannot be recorded (value-dependent
Python, a custom autograd.Function's backward) is refused before training."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from guides import build_guide
from models import build_vae
from pyrovae import PyrovaeError
from pyrovae.train import FitConfig, SVIStep, fit
from pyrovae.train.traced import drop_identities
from tests.conftest import requires_cuda

PAIRS = [  # (prior, guide family, objective, particles)
    ("standard", "diagonal", "TraceMeanField_ELBO", 1),
    ("vamp", "full", "TraceMeanField_ELBO", 1),
    ("mog", "flow", "Trace_ELBO", 2),
    # the "maf" flow's draws are its inverse's fixed-point passes; the VampPrior scores
    # each draw under the pseudo-inputs' flows
    ("vamp", "flow:maf", "TraceMeanField_ELBO", 1),
    ("standard", "diagonal", "IWAE", 3),
    # custom operators (pyrovae.distributions): the vMF draw and its Bessel normaliser, the
    # Dirichlet draw (a VampPrior of Dirichlets: their log densities too), Power Spherical
    ("sphere", "vmf", "TraceMeanField_ELBO", 1),
    ("vamp", "dirichlet", "Trace_ELBO", 2),
    ("sphere", "power-spherical", "Trace_ELBO", 1),
    ("standard", "mixture", "Trace_ELBO", 1),  # Pyro's pathwise mixture gradient
]


def _pair(prior, family, device):
    """``family`` may name the flow direction, as ``flow:maf``."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    family, _, direction = family.partition(":")
    options = {"direction": direction} if direction else {}
    guide = build_guide(64, 3, family, (32,), **options).to(device)
    model = build_vae(64, 3, (32,), prior, posterior=guide.posterior).to(device)
    return model, guide


def _loss_and_gradients(step, x, data_scale, beta, traced):
    with pyro.validation_enabled(False):
        if traced:
            loss = step.traced(step.params, x, data_scale, beta)
        else:
            step.scaler.data_scale, step.scaler.beta = data_scale, beta
            loss = step._unlabeled_loss(x)
    return loss.detach(), torch.autograd.grad(loss, step.params)


@pytest.mark.parametrize("prior, family, objective, particles", PAIRS)
def test_the_recording_gives_the_python_losses_values_and_gradients(
    digits, prior, family, objective, particles, device
):
    model, guide = _pair(prior, family, device)
    step = SVIStep(model, guide, objective, num_particles=particles, jit=True)
    x = torch.bernoulli(digits.train[:20]).to(device)
    step.setup(x)
    for data_scale, beta in ((5.0, 0.3), (5.0, 1.0), (2.0, 1.0)):  # as warm-up ends
        pyro.set_rng_seed(11)
        python = [_loss_and_gradients(step, x, data_scale, beta, False) for _ in range(2)]
        after_python = torch.get_rng_state()
        pyro.set_rng_seed(11)
        traced = [_loss_and_gradients(step, x, data_scale, beta, True) for _ in range(2)]
        # the same draws, twice in a row: recording (first round) consumed none
        assert torch.equal(torch.get_rng_state(), after_python)
        for (loss_p, grads_p), (loss_t, grads_t) in zip(python, traced, strict=True):
            torch.testing.assert_close(loss_t, loss_p)
            for a, b in zip(grads_t, grads_p, strict=True):
                torch.testing.assert_close(a, b)
    assert len(step.traced.recordings) == 1  # new scales are inputs, not new recordings


def test_each_batch_shape_gets_its_own_recording(digits):
    model, guide = _pair("standard", "diagonal", "cpu")
    step = SVIStep(model, guide, "TraceMeanField_ELBO", jit=True)
    images = torch.bernoulli(digits.train[:20])
    step.setup(images)
    for rows in (20, 7, 20):
        x = images[:rows]
        pyro.set_rng_seed(5)
        loss_p, _ = _loss_and_gradients(step, x, 3.0, 1.0, False)
        pyro.set_rng_seed(5)
        loss_t, _ = _loss_and_gradients(step, x, 3.0, 1.0, True)
        torch.testing.assert_close(loss_t, loss_p)
    assert len(step.traced.recordings) == 2


def test_no_grad_blocks_and_detach_in_the_pair_are_kept():
    # a recording below autograd would lose the no_grad block and differentiate through it
    weight = torch.ones(3, requires_grad=True)

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 3), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z * weight, 1.0).to_event(1), obs=x)

    def guide(x):
        with torch.no_grad():
            frozen = weight * 2.0
        pyro.param("w", weight)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(x * frozen * weight + weight.detach(), 1.0).to_event(1))

    pyro.clear_param_store()
    x = torch.randn(4, 3)
    step = SVIStep(model, guide, "TraceMeanField_ELBO", jit=True)
    step.setup(x)
    pyro.set_rng_seed(2)
    _, python = _loss_and_gradients(step, x, 1.0, 1.0, False)
    pyro.set_rng_seed(2)
    _, traced = _loss_and_gradients(step, x, 1.0, 1.0, True)
    torch.testing.assert_close(traced, python)


def test_data_dependent_control_flow_is_refused():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x)), 1.0))
            if z.sum() > 0:  # decided by a value: a recording would freeze the branch
                z = z * 2
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.zeros(len(x)))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc, 1.0))

    pyro.clear_param_store()
    step = SVIStep(model, guide, "Trace_ELBO", jit=True)
    with pytest.raises(PyrovaeError, match="data-dependent control flow.*jit=False"):
        step(torch.randn(5))


class _DoubledGradient(torch.autograd.Function):
    """Identity forward, twice the gradient backward: a Function whose backward a
    recording cannot keep."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad


def _with_torch_dirichlet(head):
    head.make_dist = lambda raw, features: dist.Dirichlet(torch.nn.functional.softplus(raw) + 0.3)


def _with_doubled_gradient(head):
    make_dist = head.make_dist
    head.make_dist = lambda raw, features: make_dist(_DoubledGradient.apply(raw), features)


@pytest.mark.parametrize(
    "prior, family, user_head, message",
    [  # a user's own Function: a recording inlines its forward and autograd differentiates
        # that instead (the gradients differ); torch's own Dirichlet draw has no derivative
        # without its Function (pyrovae's Dirichlet is a custom operator, which records)
        ("standard", "diagonal", _with_doubled_gradient, "does not reproduce.*autograd.Function"),
        ("dirichlet", "dirichlet", _with_torch_dirichlet, "cannot be differentiated.*Function"),
    ],
)
def test_a_custom_autograd_function_whose_backward_would_be_lost_is_refused(
    digits, prior, family, user_head, message
):
    model, guide = _pair(prior, family, "cpu")
    user_head(guide.head)
    step = SVIStep(model, guide, "Trace_ELBO", jit=True)
    x = torch.bernoulli(digits.train[:20])
    with pyro.validation_enabled(False):
        step.setup(x)
        before = [p.detach().clone() for p in step.params]
        with pytest.raises(PyrovaeError, match=message):
            step(x, 5.0)
    for p, saved in zip(step.params, before, strict=True):
        assert torch.equal(p, saved)  # refused before any update
    assert step.traced.recordings == {}


def test_objectives_that_read_values_on_the_host_are_refused(digits):
    model, guide = _pair("standard", "diagonal", "cpu")
    with pytest.raises(PyrovaeError, match="TraceEnum_ELBO reads values.*jit=False"):
        SVIStep(model, guide, "TraceEnum_ELBO", jit=True)
    with pytest.raises(PyrovaeError, match="records the losses of.*TraceEnum_ELBO reads"):
        FitConfig(objective="TraceEnum_ELBO", jit=True).validate()


@pytest.mark.parametrize("objective", ["Trace_ELBO", "TraceMeanField_ELBO"])
def test_fit_trains_the_same_with_and_without_jit(digits, objective, device):
    config = FitConfig(
        objective=objective,
        epochs=2,
        batch_size=128,  # 1,347 training rows: a last batch of 67, its own recording
        warmup_epochs=2,
        progress=False,
        seed=4,
        device=device,
    )
    results = []
    for jit in (False, True):
        model, guide = _pair("standard", "diagonal", device)
        history = fit(model, guide, digits, config, jit=jit)
        results.append((history, [*model.parameters(), *guide.parameters()]))
    (history_p, params_p), (history_t, params_t) = results
    assert history_t.validation_elbo == pytest.approx(history_p.validation_elbo, abs=1e-4)
    for a, b in zip(params_t, params_p, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "prior, family",
    [
        ("sphere", "vmf"),
        ("dirichlet", "dirichlet"),
        ("standard", "mixture"),
        ("standard", "lowrank"),
    ],
)
def test_the_custom_operator_families_train_recorded_as_in_python(digits, prior, family, device):
    # fit's default records them now; the vMF's rejection rounds vary from batch to batch;
    # lowrank's log q (Trace_ELBO reads it) is computed in float64
    config = FitConfig(
        objective="Trace_ELBO", epochs=1, batch_size=128, progress=False, seed=5, device=device
    )
    results = []
    for jit in (None, False):
        model, guide = _pair(prior, family, device)
        history = fit(model, guide, digits, config, jit=jit)
        results.append((history, [*model.parameters(), *guide.parameters()]))
    (history_r, params_r), (history_p, params_p) = results
    assert history_r.replayed_steps == 11 and history_p.replayed_steps == 0
    assert history_r.validation_elbo == pytest.approx(history_p.validation_elbo, abs=1e-3)
    for a, b in zip(params_r, params_p, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_a_replay_without_gradients_records_none_where_the_loss_enables_them(digits):
    # the mixture guide's draw reads Categorical.probs, a lazy property of torch's that
    # computes under enable_grad: the recording holds "grad on" twice (entry, and the exit
    # back to the mode at recording time). Replayed under no_grad, the validation ELBO
    # recorded autograd history from there on and came back requiring grad.
    model, guide = _pair("standard", "mixture", "cpu")
    step = SVIStep(model, guide, "Trace_ELBO", jit=True)
    x = torch.bernoulli(digits.train[:20])
    with pyro.validation_enabled(False):
        step.setup(x)
        step(x, 5.0)
        (recording,) = step.traced.recordings.values()
        switches = [n.args for n in recording.graph.nodes if "grad_enabled" in str(n.target)]
        assert switches == [(True,), (True,)]
        with torch.no_grad():
            value = step.traced.value(step.params, x)
            assert not torch.is_grad_enabled()
    assert not value.requires_grad and torch.isfinite(value)


def test_identity_operations_are_dropped_and_in_place_targets_kept():
    from torch.fx.experimental.proxy_tensor import make_fx

    def f(x, w):
        a, b = torch.broadcast_tensors(x.expand(3, 4) * 1.0, w)  # a is x; b is expanded w
        kept = x * 1  # written in place below: must not become x
        kept.neg_()
        return ((a + 0.0) - 0).sum() + b.sum() + kept.sum() + (x * 2.0).sum()

    x, w = torch.randn(3, 4), torch.randn(4)
    recording = make_fx(f, pre_dispatch=True)(x, w)
    before = len(recording.graph.nodes)
    expected = f(x.clone(), w)
    drop_identities(recording)
    targets = [str(n.target) for n in recording.graph.nodes]
    assert len(recording.graph.nodes) < before
    assert "aten.add.Tensor" in targets  # the sum of the four parts stays
    assert targets.count("aten.mul.Tensor") == 2  # the in-place target and x * 2 remain
    assert "aten.broadcast_tensors.default" in targets  # w to (3, 4) is a real broadcast
    original = x.clone()
    torch.testing.assert_close(recording(x, w), expected)
    assert torch.equal(x, original)  # the in-place negation wrote to its own tensor


def test_a_resumed_jit_run_ends_where_one_run_would(digits, tmp_path):
    # recording consumes no random numbers, so the fresh recordings after a resume leave
    # the restored generator where the uninterrupted run has it
    config = FitConfig(epochs=4, batch_size=256, progress=False, seed=2, jit=True)
    model_a, guide_a = _pair("standard", "diagonal", "cpu")
    whole = fit(model_a, guide_a, digits, config)
    checkpoint = tmp_path / "run.pt"
    model_b, guide_b = _pair("standard", "diagonal", "cpu")
    fit(model_b, guide_b, digits, config, epochs=2, checkpoint=checkpoint)
    model_c, guide_c = _pair("standard", "diagonal", "cpu")
    resumed = fit(model_c, guide_c, digits, config, checkpoint=checkpoint, resume=checkpoint)
    assert resumed.validation_elbo == whole.validation_elbo
    assert resumed.replayed_steps == whole.replayed_steps > 0  # counted across the resume
    for a, c in zip(
        [*model_a.parameters(), *guide_a.parameters()],
        [*model_c.parameters(), *guide_c.parameters()],
        strict=True,
    ):
        assert torch.equal(a, c)


def test_auto_records_where_it_can_and_runs_python_elsewhere(digits, caplog):
    x = torch.bernoulli(digits.train[:20])
    model, guide = _pair("standard", "diagonal", "cpu")
    recorded = SVIStep(model, guide, "TraceMeanField_ELBO", jit="auto")
    with pyro.validation_enabled(False):
        recorded(x, 5.0)
    assert len(recorded.traced.recordings) == 1
    # a guide with a Function of the user's cannot be recorded: the same step as
    # jit=False, and the reason logged
    results = []
    for jit in ("auto", False):
        model, guide = _pair("standard", "diagonal", "cpu")
        _with_doubled_gradient(guide.head)
        step = SVIStep(model, guide, "Trace_ELBO", jit=jit)
        pyro.set_rng_seed(3)
        with pyro.validation_enabled(False), caplog.at_level("INFO", "pyrovae.train.step"):
            losses = [step(x, 5.0) for _ in range(2)]
        results.append((losses, [p.detach().clone() for p in step.params]))
        assert step.traced is None
    assert "training without a recording" in caplog.text
    (losses_auto, params_auto), (losses_off, params_off) = results
    assert losses_auto == losses_off
    for a, b in zip(params_auto, params_off, strict=True):
        assert torch.equal(a, b)
    model, guide = _pair("standard", "diagonal", "cpu")
    assert SVIStep(model, guide, "TraceEnum_ELBO", jit="auto").traced is None


def test_jit_modes_are_checked():
    with pytest.raises(PyrovaeError, match="jit must be one of"):
        FitConfig(jit="sometimes").validate()
    FitConfig(jit="auto").validate()


class Undeclared:
    """A pair part of the user's own: a plain callable around a library module, declaring
    nothing about its Python state."""

    def __init__(self, part):
        self.part = part

    def __call__(self, x):
        return self.part(x)


def test_fits_default_replays_pyrovaes_own_pairs_and_runs_python_for_others(digits, caplog):
    config = FitConfig(epochs=2, batch_size=256, progress=False, seed=1)
    assert config.jit is None
    model, guide = _pair("standard", "diagonal", "cpu")
    steps_per_epoch = -(-digits.train.shape[0] // 256)
    declared = fit(model, guide, digits, config)
    assert declared.replayed_steps == 2 * steps_per_epoch
    model, guide = _pair("standard", "diagonal", "cpu")
    with caplog.at_level("INFO", "pyrovae.train.step"):
        undeclared = fit(Undeclared(model), guide, digits, config)  # what the user wrote
    assert undeclared.replayed_steps == 0
    assert "set it on both (or pass jit='auto')" in caplog.text  # says how to go faster
    # the same training either way, up to float rounding
    assert declared.validation_elbo == pytest.approx(undeclared.validation_elbo, abs=1e-4)
    model, guide = _pair("standard", "diagonal", "cpu")
    assert fit(Undeclared(model), guide, digits, config, jit="auto").replayed_steps > 0


class AnnealedBetweenEpochs(torch.nn.Module):
    """A model whose likelihood weight grows by 0.5 after each validation ELBO, i.e.
    between epochs: Python state a recording freezes."""

    def __init__(self, model, validation_rows):
        super().__init__()
        self.model, self.validation_rows, self.weight = model, validation_rows, 1.0

    def forward(self, x):
        with pyro.poutine.scale(scale=self.weight):
            self.model(x)
        if x.shape[0] == self.validation_rows:
            self.weight += 0.5


def test_a_recording_is_made_again_when_the_python_loss_has_changed(digits, monkeypatch):
    config = FitConfig(epochs=3, batch_size=256, progress=False, seed=5)
    rows = digits.validation.shape[0]
    assert rows != 256 and rows != digits.train.shape[0] % 256

    def train(jit):
        model, guide = _pair("standard", "diagonal", "cpu")
        annealed = AnnealedBetweenEpochs(model, rows)
        history = fit(annealed, guide, digits, config, jit=jit)
        return history, [*model.parameters(), *guide.parameters()]

    python, params_python = train(False)
    replayed, params_replayed = train("auto")  # the user's choice: it declares nothing
    # epochs 2 and 3 each found both recordings (full batches, last batch) stale
    assert replayed.rerecorded == 4
    assert replayed.validation_elbo == pytest.approx(python.validation_elbo, abs=1e-4)
    for a, b in zip(params_replayed, params_python, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # without the check between epochs the weight would stay at 1.0 in every step
    monkeypatch.setattr("pyrovae.train.traced.TracedLoss.verify_again", lambda self: None)
    frozen, params_frozen = train("auto")
    assert frozen.rerecorded == 0
    pairs = zip(params_frozen, params_python, strict=True)
    assert any(not torch.allclose(a, b, atol=1e-3) for a, b in pairs)
    # so is a pair that declares itself static: it is taken at its word
    monkeypatch.undo()
    monkeypatch.setattr(AnnealedBetweenEpochs, "jit_static", True, raising=False)
    assert train(None)[0].rerecorded == 0


def test_the_scales_are_made_once_not_copied_to_the_device_every_step(digits):
    x = torch.bernoulli(digits.train[:32])
    model, guide = _pair("standard", "diagonal", "cpu")
    step = SVIStep(model, guide, "TraceMeanField_ELBO", jit=True)
    with pyro.validation_enabled(False):
        step(x, 10.0, 0.5)
        made = dict(step.traced.scale_tensors)
        for _ in range(3):
            step(x, 10.0, 0.5)
        assert step.traced.scale_tensors.keys() == made.keys() and len(made) == 2
        assert all(step.traced.scale_tensors[k] is made[k] for k in made)
        step(x, 10.0, 0.6)  # a new warm-up weight: one more tensor, the others kept
        assert len(step.traced.scale_tensors) == 3


@requires_cuda
@pytest.mark.parametrize(
    "prior, family", [("standard", "diagonal"), ("sphere", "vmf"), ("dirichlet", "dirichlet")]
)
def test_replayed_steps_launch_without_waiting_for_the_gpu(digits, prior, family):
    # fit reads each step's outcome one step late; launching must never wait for the
    # device (a host copy of a scale did, twice per step, before the scales were kept; the
    # vMF's Bessel and quadrature constants are kept per device for the same reason)
    x = torch.bernoulli(digits.train[:100]).cuda()
    model, guide = _pair(prior, family, "cuda")
    step = SVIStep(model, guide, "TraceMeanField_ELBO", jit=True)
    with pyro.validation_enabled(False):
        step(x, 10.0, 1.0)  # setup and recording may wait
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(3):
                step.launch(x, 10.0, 1.0)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert len(step.read()) == 3


def test_a_declared_pairs_validation_elbo_is_replayed_with_the_same_value(digits, monkeypatch):
    import pyrovae.train.loop as loop

    config = FitConfig(epochs=2, batch_size=256, progress=False, seed=6)
    model, guide = _pair("standard", "diagonal", "cpu")
    python = fit(model, guide, digits, config, jit=False)
    calls = []
    python_estimate = loop.estimate_elbo
    monkeypatch.setattr(
        loop, "estimate_elbo", lambda *a, **k: calls.append(1) or python_estimate(*a, **k)
    )
    model, guide = _pair("standard", "diagonal", "cpu")
    replayed = fit(model, guide, digits, config)
    assert calls == []  # no Python pass over the validation split
    assert replayed.validation_elbo == python.validation_elbo  # same draws, same figure
    model, guide = _pair("standard", "diagonal", "cpu")
    fit(model, guide, digits, config, num_particles=2)  # another estimator: Python's
    assert len(calls) == 2


def test_validation_replays_in_training_sized_chunks(digits, monkeypatch):
    """Observed: validating in chunks of 1,000 rows made a recording of that size, checked
    with gradients, for a VampPrior over a flow guide on Fashion-MNIST: 3.9 GB peak RSS
    against 1.3 GB with chunks of the training batch, which replay the training step's own
    recording. No recording may hold more rows than a training batch."""
    from pyrovae.train.traced import TracedLoss

    recorded_rows = []
    record = TracedLoss._record

    def spy(self, params, x, scales):
        recorded_rows.append(x.shape[0])
        return record(self, params, x, scales)

    monkeypatch.setattr(TracedLoss, "_record", spy)
    model, guide = _pair("standard", "diagonal", "cpu")
    history = fit(model, guide, digits, epochs=1, batch_size=64, progress=False)
    assert len(digits.validation) > 64 and math.isfinite(history.validation_elbo[-1])
    assert recorded_rows and max(recorded_rows) <= 64, recorded_rows
