"""The mixture's full-covariance fast path: multivariate_normal_log_probs gives torch's
MultivariateNormal log densities (exactly in float64, within a stated float32 error), the
same gradients, the same values chunk by chunk, and is what the mixture uses."""

import pyro.distributions as dist
import pytest
import torch

from pyrovae.distributions import SharedComponentMixture, mixture
from pyrovae.distributions.mixture import multivariate_normal_log_probs

F64 = torch.float64


def components(k, d, scale, dtype=F64):
    lower = (torch.randn(k, d, d, dtype=dtype) * 0.3 * scale).tril(-1)
    scale_tril = lower + torch.diag_embed((torch.rand(k, d, dtype=dtype) + 0.5) * scale)
    return torch.randn(k, d, dtype=dtype) * 2, scale_tril


def near_and_far_values(loc, scale_tril, n=20):
    """n values within a few scales of component 0 (where rounding matters) and n far."""
    d = loc.shape[-1]
    near = loc[0] + (scale_tril[0] @ torch.randn(d, n, dtype=loc.dtype)).T
    return torch.cat([near, 2 * torch.randn(n, d, dtype=loc.dtype)])


def torch_log_probs(value, loc, scale_tril):
    return dist.MultivariateNormal(loc, scale_tril=scale_tril).log_prob(value.unsqueeze(-2))


def test_equal_to_torch_in_float64_values_and_gradients():
    torch.manual_seed(0)
    loc, scale_tril = components(6, 5, 0.7)
    value = torch.randn(3, 4, 5, dtype=F64)
    inputs = [t.clone().requires_grad_() for t in (value, loc, scale_tril)]
    ours = multivariate_normal_log_probs(*inputs)
    assert ours.shape == (3, 4, 6)
    theirs = torch_log_probs(*inputs)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    weights = torch.randn(3, 4, 6, dtype=F64)
    ours_grads = torch.autograd.grad((weights * ours).sum(), inputs)
    theirs_grads = torch.autograd.grad((weights * theirs).sum(), inputs)
    for a, b in zip(ours_grads, theirs_grads, strict=True):
        torch.testing.assert_close(a.tril() if a.dim() == 3 else a, b.tril() if b.dim() == 3 else b)


@pytest.mark.parametrize("trained", ["value", "loc", "scale_tril"])
def test_a_gradient_through_any_one_input(trained):
    # the projected block is updated in place only where autograd records nothing: each
    # single input that needs a gradient must keep it off that path
    torch.manual_seed(4)
    loc, scale_tril = components(4, 3, 0.5)
    inputs = {"value": torch.randn(5, 3, dtype=F64), "loc": loc, "scale_tril": scale_tril}
    inputs[trained] = inputs[trained].clone().requires_grad_()
    ours = torch.autograd.grad(multivariate_normal_log_probs(**inputs).sum(), inputs[trained])
    theirs = torch.autograd.grad(torch_log_probs(**inputs).sum(), inputs[trained])
    torch.testing.assert_close(
        ours[0].tril() if trained == "scale_tril" else ours[0],
        theirs[0].tril() if trained == "scale_tril" else theirs[0],
    )


@pytest.mark.parametrize("scale, near_error", [(1.0, 2e-4), (0.05, 2e-3), (1e-3, 0.1)])
def test_float32_rounding_stays_within_the_stated_bound(scale, near_error):
    """Near a component (within 50 nats of the best density) the float32 error is bounded
    in nats; everywhere it is below 1e-3 relative. At d = 40, K = 50, 40 values."""
    torch.manual_seed(1)
    loc, scale_tril = components(50, 40, scale)
    value = near_and_far_values(loc, scale_tril)
    exact = torch_log_probs(value, loc, scale_tril)
    ours = multivariate_normal_log_probs(value.float(), loc.float(), scale_tril.float()).double()
    near = exact > exact.max() - 50
    assert near.sum() >= 20
    assert (ours - exact)[near].abs().max() < near_error
    assert ((ours - exact) / exact.abs()).abs().max() < 1e-3


def test_chunks_give_the_same_values_as_one_product(monkeypatch):
    torch.manual_seed(2)
    loc, scale_tril = components(4, 3, 1.0)
    value = torch.randn(2, 5, 3, dtype=F64)
    whole = multivariate_normal_log_probs(value, loc, scale_tril)
    # K d = 12 floats per value: 10 values in chunks of 3, 3, 3, 1
    monkeypatch.setattr(mixture, "PROJECTED_FLOATS", 36)
    torch.testing.assert_close(multivariate_normal_log_probs(value, loc, scale_tril), whole)
    with torch.no_grad():  # the in-place path
        torch.testing.assert_close(multivariate_normal_log_probs(value, loc, scale_tril), whole)
    monkeypatch.setattr(mixture, "PROJECTED_FLOATS", 1)  # fewer floats than one value: 1 each
    torch.testing.assert_close(multivariate_normal_log_probs(value, loc, scale_tril), whole)


def test_chunks_give_the_same_gradients_as_one_product(monkeypatch):
    torch.manual_seed(5)
    loc, scale_tril = components(4, 3, 1.0)
    inputs = [
        t.clone().requires_grad_() for t in (torch.randn(2, 5, 3, dtype=F64), loc, scale_tril)
    ]
    weights = torch.randn(2, 5, 4, dtype=F64)
    whole = torch.autograd.grad((weights * multivariate_normal_log_probs(*inputs)).sum(), inputs)
    monkeypatch.setattr(mixture, "PROJECTED_FLOATS", 36)  # chunks of 3, 3, 3, 1 values
    chunked = torch.autograd.grad((weights * multivariate_normal_log_probs(*inputs)).sum(), inputs)
    for a, b in zip(chunked, whole, strict=True):
        torch.testing.assert_close(a, b)


def test_the_squared_distances_backward_matches_finite_differences():
    # the hand-written backward of ||A_k v_i - c_k||^2 against torch's numerical gradient
    torch.manual_seed(6)
    k, d, n = 3, 4, 5
    rows = torch.randn(k * d, d, dtype=F64, requires_grad=True)
    shift = torch.randn(k, d, 1, dtype=F64, requires_grad=True)
    values = torch.randn(n, d, dtype=F64, requires_grad=True)
    squared = lambda *inputs: mixture._squared_projected_distances(*inputs)[0]  # noqa: E731
    assert torch.autograd.gradcheck(squared, (rows, shift, values))


def test_the_triangular_inverse_backward_matches_finite_differences():
    # dL = -tril(X^T dX X^T) against torch's numerical gradient; entries above the diagonal
    # are not read, so their gradient is zero both ways
    torch.manual_seed(9)
    _, scale_tril = components(3, 4, 0.7)
    scale_tril.requires_grad_()
    assert torch.autograd.gradcheck(mixture._lower_triangular_inverse, (scale_tril,))
    inverse = mixture._lower_triangular_inverse(scale_tril)
    torch.testing.assert_close(inverse @ scale_tril, torch.eye(4, dtype=F64).expand(3, 4, 4))


def test_a_recording_keeps_the_squared_distances_with_their_backward():
    # fit records the loss: the operators must stay one node each (the distances' forward
    # inlined, autograd would record three (K, d, n) blocks instead of the one saved here;
    # the inverse's, a second triangular solve on the way back)
    from torch.fx.experimental.proxy_tensor import make_fx

    torch.manual_seed(7)
    loc, scale_tril = components(6, 4, 0.5)
    loc.requires_grad_()
    value = torch.randn(10, 4, dtype=F64, requires_grad=True)
    recording = make_fx(multivariate_normal_log_probs, pre_dispatch=True)(value, loc, scale_tril)
    targets = [str(n.target) for n in recording.graph.nodes]
    assert targets.count("pyrovae.squared_projected_distances.default") == 1
    assert "aten.square.default" not in targets
    assert targets.count("pyrovae.lower_triangular_inverse.default") == 1
    assert "aten.linalg_solve_triangular.default" not in targets
    weights = torch.randn(10, 6, dtype=F64)
    python = torch.autograd.grad(
        (weights * multivariate_normal_log_probs(value, loc, scale_tril)).sum(), (value, loc)
    )
    replayed = torch.autograd.grad(
        (weights * recording(value, loc, scale_tril)).sum(), (value, loc)
    )
    for a, b in zip(replayed, python, strict=True):
        torch.testing.assert_close(a, b)


def test_a_mixture_of_full_covariance_components_uses_it(monkeypatch):
    calls = []

    def spy(*args):
        calls.append(args[0].shape)
        return multivariate_normal_log_probs(*args)

    monkeypatch.setattr(mixture, "multivariate_normal_log_probs", spy)
    torch.manual_seed(3)
    loc, scale_tril = components(5, 3, 0.5)
    logits = torch.randn(5, dtype=F64)
    mixture_dist = SharedComponentMixture(
        logits, dist.MultivariateNormal(loc, scale_tril=scale_tril)
    ).expand((4,))
    value = torch.randn(4, 3, dtype=F64)
    expected = torch.logsumexp(
        torch_log_probs(value, loc, scale_tril) + torch.log_softmax(logits, -1), -1
    )
    torch.testing.assert_close(mixture_dist.log_prob(value), expected)
    assert calls == [(4, 3)]


@pytest.mark.parametrize("block_floats", [1, 30, 60])  # blocks of 1; 2, 2, 1; 4, 1 components
def test_component_blocks_give_the_same_values_and_gradients(monkeypatch, block_floats):
    # on the CPU each chunk is computed a cache-sized block of components at a time, forward
    # and backward, recorded or not: 5 components, d = 3, 5 values in one chunk
    torch.manual_seed(8)
    loc, scale_tril = components(5, 3, 0.8)
    inputs = [t.clone().requires_grad_() for t in (torch.randn(5, 3, dtype=F64), loc, scale_tril)]
    weights = torch.randn(5, 5, dtype=F64)
    whole = multivariate_normal_log_probs(*inputs)
    whole_grads = torch.autograd.grad((weights * whole).sum(), inputs)
    monkeypatch.setattr(mixture, "CACHE_BLOCK_FLOATS", block_floats)
    blocked = multivariate_normal_log_probs(*inputs)
    torch.testing.assert_close(blocked, whole)
    blocked_grads = torch.autograd.grad((weights * blocked).sum(), inputs)
    for a, b in zip(blocked_grads, whole_grads, strict=True):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        torch.testing.assert_close(multivariate_normal_log_probs(*inputs), whole)
    rows = torch.randn(15, 3, dtype=F64, requires_grad=True)
    shift = torch.randn(5, 3, 1, dtype=F64, requires_grad=True)
    squared = lambda *args: mixture._squared_projected_distances(*args)[0]  # noqa: E731
    assert torch.autograd.gradcheck(squared, (rows, shift, inputs[0]))


def test_component_blocks_fit_the_cache_on_the_cpu_only():
    # K = 500, d = 40, the 104 values of an evaluation chunk: 63 components per 1 MB block on
    # the CPU; on a GPU one block (a few kernel launches each), the chunk's memory bound only
    blocks = mixture._components_per_block
    assert blocks(500, 40, 104, torch.device("cpu")) == mixture.CACHE_BLOCK_FLOATS // 4160 == 63
    assert blocks(500, 40, 10**5, torch.device("cpu")) == 1
    assert blocks(500, 40, 104, torch.device("cuda")) == 500


def test_no_values_give_no_log_densities():
    loc, scale_tril = components(3, 2, 1.0)
    no_values = torch.zeros(0, 2, dtype=F64)
    assert multivariate_normal_log_probs(no_values, loc, scale_tril).shape == (0, 3)
