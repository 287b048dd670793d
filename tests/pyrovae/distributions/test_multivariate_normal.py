"""pyrovae's MultivariateNormal draws what Pyro's does and scores its own draws from their
noise: the same values and gradients as the triangular solve where that is accurate, and
exact where float32's solve is off by many orders of magnitude (the cause of the
``vamp+full`` divergence: a guide whose -log q(z | x) the optimizer could inflate)."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from guides.families import FullCovarianceHead
from pyrovae.distributions import MultivariateNormal


def _factor(batch, d, offdiag, dtype=torch.float64, seed=0):
    """Lower-triangular L = U diag(s) with U's off-diagonal entries uniform in (-offdiag,
    offdiag): the full-covariance head's parameterization."""
    generator = torch.Generator().manual_seed(seed)
    off = (torch.rand(batch, d, d, generator=generator, dtype=dtype) * 2 - 1) * offdiag
    unit = torch.tril(off, -1) + torch.eye(d, dtype=dtype)
    scale = torch.rand(batch, d, generator=generator, dtype=dtype) * 0.5 + 0.05
    return unit * scale.unsqueeze(-2)


@pytest.mark.parametrize("sample_shape", [(), (3,)])
def test_the_same_draws_values_and_gradients_as_pyros(sample_shape):
    loc = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    scale_tril = _factor(4, 5, offdiag=0.5).requires_grad_()
    results = []
    for family in (MultivariateNormal, dist.MultivariateNormal):
        torch.manual_seed(0)
        q = family(loc, scale_tril=scale_tril)
        z = q.rsample(sample_shape)
        log_q = q.log_prob(z)
        gradients = torch.autograd.grad((log_q + z.sum(-1)).sum(), (loc, scale_tril))
        results.append((z, log_q, gradients))
    (z, log_q, gradients), (pyros_z, pyros_log_q, pyros_gradients) = results
    assert torch.equal(z, pyros_z)
    assert log_q.shape == (*sample_shape, 4)
    torch.testing.assert_close(log_q, pyros_log_q, rtol=1e-12, atol=1e-12)
    # L's upper triangle is structurally zero: the draw multiplies by it, torch's solve
    # ignores it, so only the lower triangle has a gradient that means anything
    (loc_gradient, factor_gradient), (pyros_loc_gradient, pyros_factor_gradient) = (
        gradients,
        pyros_gradients,
    )
    torch.testing.assert_close(loc_gradient, pyros_loc_gradient, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        factor_gradient.tril(), pyros_factor_gradient.tril(), rtol=1e-10, atol=1e-12
    )


def test_its_own_draw_is_exact_where_floats_solve_is_not():
    scale_tril = _factor(100, 40, offdiag=5.0, dtype=torch.float32)
    loc = torch.randn(100, 40)
    torch.manual_seed(0)
    z = MultivariateNormal(loc, scale_tril=scale_tril).rsample()
    q = MultivariateNormal(loc, scale_tril=scale_tril)
    torch.manual_seed(0)
    assert torch.equal(q.rsample(), z)
    torch.manual_seed(0)
    noise = torch.randn(100, 40, dtype=torch.float32).double()  # the draw's noise
    exact = (
        -0.5 * noise.pow(2).sum(-1)
        - scale_tril.double().diagonal(dim1=-2, dim2=-1).log().sum(-1)
        - 20 * math.log(2 * math.pi)
    )
    solved = dist.MultivariateNormal(loc, scale_tril=scale_tril).log_prob(z)
    assert (solved.double() - exact).abs().max() > 1e6  # the case is one float32 gets wrong
    # the same tensor object: scored from its noise; a copy: by the solve
    torch.testing.assert_close(q.log_prob(q._latest_draw[0]).double(), exact, rtol=1e-6, atol=1e-4)
    assert (q.log_prob(q._latest_draw[0].clone()).double() - exact).abs().max() > 1e6


def test_a_draw_changed_in_place_is_scored_by_the_solve():
    q = MultivariateNormal(torch.zeros(2, 3), scale_tril=torch.eye(3).expand(2, 3, 3))
    z = q.sample()
    z.mul_(3.0)
    expected = dist.MultivariateNormal(torch.zeros(2, 3), scale_tril=torch.eye(3)).log_prob(z)
    torch.testing.assert_close(q.log_prob(z), expected)


def test_expanded_and_sampled_without_gradients_it_still_scores_its_own_draw():
    q = MultivariateNormal(torch.zeros(3), scale_tril=torch.eye(3)).expand((6, 2))
    assert type(q) is MultivariateNormal and q.batch_shape == (6, 2)
    z = q.sample((4,))
    assert z.shape == (4, 6, 2, 3) and not z.requires_grad
    assert q._latest_draw[0] is z
    expected = dist.MultivariateNormal(torch.zeros(3), scale_tril=torch.eye(3)).log_prob(z)
    torch.testing.assert_close(q.log_prob(z), expected)


def test_a_full_covariance_guides_elbo_stays_true_when_its_factor_is_ill_conditioned():
    """The ELBO's -log q(z | x) term, float32, with the head's off-diagonal outputs near
    their bound: before, the solve put it 1e20 nats or more off; it is now within float32
    rounding of the exact value."""
    pyro.clear_param_store()
    head = FullCovarianceHead(in_features=8, latent_dim=40)
    with torch.no_grad():
        head.linear.bias[80:].uniform_(-8.0, 8.0)
    features = torch.randn(16, 8)

    def guide():
        with pyro.plate("data", 16):
            return pyro.sample("z", head(features))

    torch.manual_seed(3)
    trace = pyro.poutine.trace(guide).get_trace()
    site = trace.nodes["z"]
    log_q = site["fn"].log_prob(site["value"])
    torch.manual_seed(3)
    noise = torch.randn(16, 40).double()
    scale_tril = site["fn"].scale_tril.double()
    exact = (
        -0.5 * noise.pow(2).sum(-1)
        - scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        - 20 * math.log(2 * math.pi)
    )
    torch.testing.assert_close(log_q.double(), exact, rtol=1e-6, atol=1e-3)
    solved = dist.MultivariateNormal(site["fn"].loc, scale_tril=site["fn"].scale_tril)
    assert (solved.log_prob(site["value"]).double() - exact).abs().max() > 1e6


def test_a_recording_scores_the_draw_from_its_noise_too():
    """fit replays a recording of the loss: the exact form must be what it recorded."""
    from torch.fx.experimental.proxy_tensor import make_fx

    def log_q_of_a_draw(loc, scale_tril):
        q = MultivariateNormal(loc, scale_tril=scale_tril, validate_args=False)
        return q.log_prob(q.rsample())

    loc, scale_tril = torch.zeros(4, 3), _factor(4, 3, offdiag=0.5, dtype=torch.float32)
    recording = make_fx(log_q_of_a_draw, pre_dispatch=True)(loc, scale_tril)
    targets = {str(node.target) for node in recording.graph.nodes}
    assert not any("solve_triangular" in target for target in targets)
    torch.manual_seed(2)
    replayed = recording(loc, scale_tril)
    torch.manual_seed(2)
    torch.testing.assert_close(replayed, log_q_of_a_draw(loc, scale_tril))
