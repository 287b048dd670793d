"""Every registered guide family: training, validity for any encoder output, log_prob
against scipy. A family added to FAMILIES is covered here without new test code."""

import math

import numpy as np
import pyro.distributions as dist
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from guides import FAMILIES, build_guide, family_options, make_head
from guides.families import FlowHead, FullCovarianceHead, LowRankHead, MixtureHead
from models import build_vae
from pyrovae import supports
from pyrovae.distributions import draw
from pyrovae.evaluate import estimate_elbo
from pyrovae.train import fit

D = 4  # latent size for the property tests
EXPECTED_OUTPUTS = {
    "diagonal": lambda d: 2 * d,
    "full": lambda d: d * (d + 3) // 2,
    "lowrank": lambda d: d * (2 + 2),  # default rank 2
    "mixture": lambda d: 3 * (2 * d + 1),  # default 3 components
    "flow": lambda d: 2 * d * (1 + 2),  # default 2 flows
    "vmf": lambda d: d + 1,
    "power-spherical": lambda d: d + 1,
    "dirichlet": lambda d: d,
}
NEEDS_TWO_DIMENSIONS = {"flow", "vmf", "power-spherical", "dirichlet"}


def own_prior(family: str) -> str:
    """A registered prior on the family's own space (standard / sphere / dirichlet)."""
    support = supports.CATALOGUE["guide family"][family]
    return next(n for n, s in supports.CATALOGUE["prior"].items() if s == support)


def test_every_family_has_an_expected_output_count():
    assert set(EXPECTED_OUTPUTS) == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("d", [1, 3, 10])
def test_outputs_per_datapoint(family, d):
    if family in NEEDS_TWO_DIMENSIONS and d == 1:
        with pytest.raises(ValueError, match="latent_dim >= 2"):
            make_head(family, 16, d)
        return
    head = make_head(family, 16, d)
    assert head.outputs_per_datapoint == EXPECTED_OUTPUTS[family](d)
    q = head(torch.randn(5, 16))
    assert q.batch_shape == (5,) and q.event_shape == (d,)


@pytest.mark.parametrize("objective", ["Trace_ELBO", "TraceMeanField_ELBO"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_trains_on_digits(digits, family, objective, device):
    model = build_vae(64, 4, (64,), prior=own_prior(family))
    guide = build_guide(64, 4, family, (64,))
    before = estimate_elbo(model, guide, digits.validation, objective, num_particles=5)
    config = dict(epochs=6, learning_rate=3e-3, progress=False, device=device)
    fit(model, guide, digits, objective=objective, **config)
    validation = digits.validation.to(device)
    after = estimate_elbo(model, guide, validation, objective, num_particles=5)
    assert after > before + 10, (family, objective, before, after)


def test_unknown_family_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown guide family 'banana'.*diagonal"):
        make_head("banana", 8, 2)


# ------------------------------------------------------- validity for any encoder output

extreme_floats = st.one_of(
    st.floats(-30, 30, allow_nan=False, width=32),
    st.sampled_from([-1e30, -1e4, -50.0, 0.0, 50.0, 1e4, 1e30]),
)


def raw_outputs(num_outputs):
    return st.lists(extreme_floats, min_size=num_outputs, max_size=num_outputs).map(
        lambda v: torch.tensor(v, dtype=torch.float32).unsqueeze(0)
    )


@pytest.mark.parametrize("family", sorted(FAMILIES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_encoder_output_gives_a_valid_distribution(family, data):
    head = make_head(family, 6, D)
    raw = data.draw(raw_outputs(head.linear.out_features))
    q = head.make_dist(raw, torch.zeros(1, 6))
    assert bool(q.support.check(draw(q, 4)).all())
    if isinstance(head, FullCovarianceHead):
        L = q.scale_tril
        assert torch.equal(L, torch.tril(L))
        assert (L.diagonal(dim1=-2, dim2=-1) > 0).all()
        assert torch.isfinite(L).all()
    z = draw(q, 8)
    assert torch.isfinite(z).all()
    assert torch.isfinite(q.log_prob(z)).all()


@pytest.mark.parametrize("family", sorted(FAMILIES))
@settings(max_examples=25, deadline=None)
@given(x=st.lists(st.floats(-20, 20, allow_nan=False, width=32), min_size=3 * 8, max_size=3 * 8))
def test_gradients_reach_every_encoder_and_head_parameter(family, x):
    guide = build_guide(8, D, family, (16,))
    inputs = torch.tensor(x).reshape(3, 8)
    q = guide.posterior(inputs)
    z = q.rsample()
    loss = (q.log_prob(z) + z.pow(2).sum(-1)).sum()
    loss.backward()
    for name, p in guide.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    encoder_grads = [p.grad.abs().sum() for p in guide.encoder.parameters()]
    assert sum(encoder_grads) > 0


# ------------------------------------------------------------- log_prob against scipy


def _np(t):
    return t.detach().double().numpy()


def test_diagonal_log_prob_matches_scipy():
    q = make_head("diagonal", 6, D)(torch.randn(5, 6))
    z = q.sample()
    expected = scipy.stats.norm(_np(q.base_dist.loc), _np(q.base_dist.scale)).logpdf(_np(z))
    np.testing.assert_allclose(_np(q.log_prob(z)), expected.sum(-1), rtol=1e-5)


@pytest.mark.parametrize("head_cls", [FullCovarianceHead, LowRankHead])
def test_gaussian_log_prob_matches_scipy_multivariate_normal(head_cls):
    q = head_cls(6, D)(torch.randn(5, 6) * 3)
    z = q.sample()
    cov = _np(q.covariance_matrix)
    for n in range(5):
        expected = scipy.stats.multivariate_normal(_np(q.loc[n]), cov[n]).logpdf(_np(z[n]))
        assert q.log_prob(z)[n].item() == pytest.approx(expected, rel=1e-4)


def test_mixture_log_prob_matches_scipy():
    head = MixtureHead(6, D, num_components=3)
    q = head(torch.randn(5, 6))
    z = q.sample()
    logits = _np(q.categorical.logits)
    log_pi = logits - logsumexp(logits, axis=-1, keepdims=True)
    locs, scales = _np(q.locs), _np(q.coord_scale)
    for n in range(5):
        comps = [
            scipy.stats.norm(locs[n, k], scales[n, k]).logpdf(_np(z[n])).sum() for k in range(3)
        ]
        expected = logsumexp(log_pi[n] + np.array(comps))
        assert q.log_prob(z)[n].item() == pytest.approx(expected, rel=1e-4)


def test_flow_log_prob_is_the_change_of_variables_by_inversion():
    """log q(z) for a fresh z (no cached sample) inverts the IAF stack; it must equal the
    value cached when z was drawn."""
    head = FlowHead(6, D, num_flows=2)
    features = torch.randn(5, 6)
    with torch.no_grad():
        for flow in head.flows:  # make the flows far from the identity
            for p in flow.parameters():
                p.normal_(0, 0.3)
    q = head(features)
    z = q.rsample()
    cached = q.log_prob(z)
    fresh = head(features).log_prob(z.clone())
    torch.testing.assert_close(cached, fresh, rtol=1e-4, atol=1e-4)


def test_a_plain_function_head_with_hidden_layers_is_refused():
    """Observed before: a function closing over an nn.Linear was accepted as the head and
    the layer was never trained."""
    from guides import AmortizedGuide, MLPEncoder
    from pyrovae.errors import PyrovaeError

    encoder = MLPEncoder(64, (16,))
    layer = torch.nn.Linear(16, 4)

    def head(features):
        loc, raw = layer(features).chunk(2, -1)
        return dist.Normal(loc, torch.nn.functional.softplus(raw)).to_event(1)

    with pytest.raises(PyrovaeError, match="plain function holding trainable Linear"):
        AmortizedGuide(encoder, head)

    def fixed_head(features):  # no trainable state: fine
        return dist.Normal(features[..., :2], 1.0).to_event(1)

    AmortizedGuide(encoder, fixed_head)


# ------------------------------------------------------------- the scale ceiling

SCALES_OF = {  # the scales a family's ceiling bounds, read off its distribution
    "diagonal": lambda q: q.base_dist.scale,
    "full": lambda q: q.scale_tril.diagonal(dim1=-2, dim2=-1),
    "lowrank": lambda q: q.cov_diag.sqrt(),
    "mixture": lambda q: q.coord_scale,
    "flow": lambda q: q.base_dist.base_dist.scale,
}
BOUNDED = sorted(f for f in FAMILIES if "max_scale" in {o.name for o in family_options(f)})


def test_every_family_with_a_ceiling_says_which_scales_it_bounds():
    assert set(SCALES_OF) == set(BOUNDED)


@pytest.mark.parametrize("family", BOUNDED)
@pytest.mark.parametrize("push", [1e4, -1e4])
def test_a_ceiling_bounds_every_scale_of_the_family_for_any_encoder_output(family, push):
    torch.manual_seed(0)
    head = make_head(family, 6, D, min_scale=0.05, max_scale=math.e)
    unbounded = make_head(family, 6, D, min_scale=0.05)
    unbounded.load_state_dict(head.state_dict())
    with torch.no_grad():
        for h in (head, unbounded):
            h.linear.bias.fill_(push)  # every raw output far out
    features = torch.randn(3, 6)
    scales = SCALES_OF[family](head(features))
    assert scales.max().item() <= math.e and scales.min().item() >= 0.05 - 1e-6
    if push > 0:  # without the ceiling the same outputs give scales of about 15
        assert SCALES_OF[family](unbounded(features)).max().item() > 10


@pytest.mark.parametrize("family", BOUNDED)
def test_a_ceiling_at_or_below_the_floor_is_refused(family):
    with pytest.raises(ValueError, match="max_scale must be above min_scale"):
        make_head(family, 6, D, min_scale=0.5, max_scale=0.5)


def test_a_bounded_head_prints_its_ceiling_and_an_unbounded_one_prints_as_before():
    # a checkpoint's pair summary is the printed pair: a resume across settings is refused
    assert "max_scale=2.71828" in repr(make_head("diagonal", 6, D, max_scale=math.e))
    assert repr(make_head("diagonal", 6, D)) == (
        "DiagonalNormalHead(\n  (linear): Linear(in_features=6, out_features=8, bias=True)\n)"
    )
