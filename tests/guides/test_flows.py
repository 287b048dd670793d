"""guides.flows: the split-context network and the fixed-point inverse compute Pyro's
functions with Pyro's parameters; the "maf" direction scores any z in one pass, which is
what makes a VampPrior over a flow guide fit in memory."""

import pytest
import torch
from pyro.distributions.transforms import conditional_affine_autoregressive
from pyro.nn import ConditionalAutoRegressiveNN

from guides import build_guide
from guides.families import FlowHead
from guides.flows import SplitContextAutoRegressiveNN, conditional_affine_flow
from models import build_vae
from pyrovae import PyrovaeError
from pyrovae.evaluate import estimate_elbo
from pyrovae.train import fit

D, C = 5, 7  # latent size, context size


@pytest.fixture
def float64():
    """Exact comparisons in float64: the two computations of a far-from-identity flow round
    differently in float32 (exp(3) scales, compounded over flows)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _far_from_identity(module, spread=0.3):
    torch.manual_seed(3)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, spread)


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize(
    "x_shape, context_shape",
    [((6, D), (6, C)), ((4, 6, D), (6, C)), ((6, 3, D), (3, C))],  # last: VampPrior's
)
def test_split_context_network_equals_pyros(skip, x_shape, context_shape):
    torch.manual_seed(0)
    pyros = ConditionalAutoRegressiveNN(D, C, [16, 12], skip_connections=skip)
    _far_from_identity(pyros)
    ours = SplitContextAutoRegressiveNN(D, C, [16, 12], skip_connections=skip)
    ours.load_state_dict(pyros.state_dict())
    x = torch.randn(x_shape, requires_grad=True)
    context = torch.randn(context_shape, requires_grad=True)
    expected = pyros(x, context.expand(*x_shape[:-1], C))
    got = ours(x, context)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)
    grads_ours = torch.autograd.grad(sum(t.sum() for t in got), [x, context, *ours.parameters()])
    grads_pyro = torch.autograd.grad(
        sum(t.sum() for t in expected), [x, context, *pyros.parameters()]
    )
    for a, b in zip(grads_ours, grads_pyro, strict=True):
        torch.testing.assert_close(a, b)


def test_fixed_point_inverse_equals_pyros_inverse_and_its_gradients(float64):
    torch.manual_seed(1)
    pyros = conditional_affine_autoregressive(D, C, hidden_dims=[16])
    _far_from_identity(pyros)
    ours = conditional_affine_flow(D, C, [16])
    ours.load_state_dict(pyros.state_dict())
    context = torch.randn(8, C)
    y = torch.randn(8, D, requires_grad=True)
    results = []
    for flow in (ours, pyros):
        transform = flow.condition(context)
        x = transform.inv(y)
        log_det = transform.log_abs_det_jacobian(x, y)  # from the inverse's cache
        grads = torch.autograd.grad((x.sin().sum() + log_det.sum()), [y, *flow.parameters()])
        results.append((x, log_det, grads))
    (x_ours, det_ours, grads_ours), (x_pyro, det_pyro, grads_pyro) = results
    torch.testing.assert_close(x_ours, x_pyro)
    torch.testing.assert_close(det_ours, det_pyro)
    for a, b in zip(grads_ours, grads_pyro, strict=True):
        torch.testing.assert_close(a, b)
    # and it is the inverse: one forward pass gives y back
    torch.testing.assert_close(ours.condition(context)(x_ours.detach()), y.detach())


def test_a_head_saved_with_pyros_flows_loads_and_gives_the_same_density():
    """Checkpoints written before guides.flows hold Pyro's conditional flows' state."""
    torch.manual_seed(2)
    head = FlowHead(C, D, num_flows=2)
    old = FlowHead(C, D, num_flows=2)
    old.flows = torch.nn.ModuleList(
        conditional_affine_autoregressive(D, C, hidden_dims=[64]) for _ in range(2)
    )
    _far_from_identity(old)
    head.load_state_dict(old.state_dict())
    features, z = torch.randn(5, C), torch.randn(5, D)
    torch.testing.assert_close(head(features).log_prob(z), old(features).log_prob(z))


def test_maf_density_is_the_change_of_variables_in_one_pass(float64):
    """direction="maf": z = T2^-1(T1^-1(eps)); log q(z) = log N(T1(T2(z))) + the log-scales of
    the two forward passes. The draw's cached value equals a fresh evaluation."""
    torch.manual_seed(4)
    head = FlowHead(C, D, num_flows=2, direction="maf")
    _far_from_identity(head.flows)
    features = torch.randn(6, C)
    q = head(features)
    z = q.rsample()
    cached = q.log_prob(z)
    fresh = head(features).log_prob(z.clone())
    torch.testing.assert_close(cached, fresh)

    base = q.base_dist
    eps, log_scales = z.clone(), torch.zeros(6)
    for flow in reversed(head.flows):
        mean, log_scale = flow.nn(eps, features)
        log_scale = log_scale.clamp(-5, 3)
        eps = torch.exp(log_scale) * eps + mean
        log_scales = log_scales + log_scale.sum(-1)
    torch.testing.assert_close(fresh, base.log_prob(eps) + log_scales)


def test_maf_and_iaf_are_different_members_of_the_family_with_the_same_parameters():
    """The direction changes the distribution, not the parameters: a draw's density under
    the other direction is a different (finite) number."""
    torch.manual_seed(5)
    iaf = FlowHead(C, D, direction="iaf")
    _far_from_identity(iaf.flows)
    maf = FlowHead(C, D, direction="maf")
    maf.load_state_dict(iaf.state_dict())
    features = torch.randn(4, C)
    z = iaf(features).sample()
    a, b = iaf(features).log_prob(z), maf(features).log_prob(z)
    assert torch.isfinite(b).all() and not torch.allclose(a, b)


def test_unknown_direction_is_refused_with_the_choices():
    with pytest.raises(PyrovaeError, match=r"direction must be one of \('iaf', 'maf'\)"):
        FlowHead(C, D, direction="forward")


def _saved_bytes_of_a_vamp_step(direction: str, latent_dim=16, pseudo_inputs=60, batch=12):
    torch.manual_seed(0)
    guide = build_guide(64, latent_dim, "flow", (32,), direction=direction)
    model = build_vae(
        64,
        latent_dim,
        (32,),
        "vamp",
        prior_options={"num_pseudo_inputs": pseudo_inputs},
        posterior=guide.posterior,
    )
    x = torch.rand(batch, 64).bernoulli()
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        z = guide.posterior(x).rsample()
        loss = -model.prior().log_prob(z).sum()
    loss.backward()
    return sum(saved)


def test_a_vamp_prior_over_a_maf_flow_keeps_one_pass_per_flow_for_backward():
    """Observed: vamp+flow at the published size (d = 40, K = 500, batch 100) was killed by
    the OOM killer at 24.3 GB in its first epoch. Scoring each z under the K pseudo-input
    posteriors inverted each IAF flow: d sequential passes over batch x K points, all kept
    for the backward pass. The maf direction scores them in one pass."""
    iaf, maf = _saved_bytes_of_a_vamp_step("iaf"), _saved_bytes_of_a_vamp_step("maf")
    assert maf < iaf / 5, (maf, iaf)
    # and the maf step's memory does not grow with d passes: doubling d about doubles it
    maf_wide = _saved_bytes_of_a_vamp_step("maf", latent_dim=32)
    assert maf_wide < 2.5 * maf, (maf_wide, maf)


def test_a_vamp_prior_over_a_maf_flow_trains_on_digits(digits, device):
    """The pair the published protocol could not run, at digits' size, on every device:
    fit's default (the loss recorded and replayed) trains it."""
    torch.manual_seed(0)
    guide = build_guide(64, 8, "flow", (64,), direction="maf")
    model = build_vae(
        64, 8, (64,), "vamp", prior_options={"num_pseudo_inputs": 50}, posterior=guide.posterior
    )
    before = estimate_elbo(model, guide, digits.validation, "TraceMeanField_ELBO")
    history = fit(model, guide, digits, epochs=6, learning_rate=3e-3, progress=False, device=device)
    after = estimate_elbo(model, guide, digits.validation.to(device), "TraceMeanField_ELBO")
    assert history.replayed_steps > 0
    assert after > before + 10, (before, after)


@pytest.mark.parametrize("direction, warned", [("iaf", True), ("maf", False)])
def test_a_vamp_prior_over_an_iaf_flow_says_to_use_maf(direction, warned, caplog):
    guide = build_guide(64, 10, "flow", (16,), direction=direction)
    model = build_vae(  # K d = 1000: digits' d = 10 with 100 pseudo-inputs
        64, 10, (16,), "vamp", prior_options={"num_pseudo_inputs": 100}, posterior=guide.posterior
    )
    with caplog.at_level("WARNING", logger="models.priors"):
        model.prior()
        model.prior()  # said once per prior
    said = [r.getMessage() for r in caplog.records if "direction='maf'" in r.getMessage()]
    assert len(said) == (1 if warned else 0), said


def test_a_small_vamp_prior_over_an_iaf_flow_says_nothing(caplog):
    """Below K d = 1000 the inversion costs little (the registry probes K = 2, d = 3)."""
    guide = build_guide(64, 4, "flow", (16,))
    model = build_vae(
        64, 4, (16,), "vamp", prior_options={"num_pseudo_inputs": 9}, posterior=guide.posterior
    )
    with caplog.at_level("WARNING", logger="models.priors"):
        model.prior()
    assert not caplog.records
