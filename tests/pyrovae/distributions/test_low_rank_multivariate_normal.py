"""pyrovae's LowRankMultivariateNormal scores values in float64: at the lowrank head's
bounds (|W_ij| up to 5, scales down to 0.05) float32's Woodbury Mahalanobis term loses
tenths of a nat to cancellation, ours keeps float32's output rounding."""

import pyro.distributions as dist
import pytest
import torch

from guides.families import LowRankHead
from pyrovae.distributions import LowRankMultivariateNormal
from tests.conftest import DEVICES


def _at_the_heads_bounds(batch=500, d=40, rank=2, seed=0, device="cpu"):
    """float32 (loc, W, D) with W uniform in (-5, 5) and D at the head's floor 0.05^2."""
    generator = torch.Generator().manual_seed(seed)
    loc = torch.randn(batch, d, generator=generator)
    factor = (torch.rand(batch, d, rank, generator=generator) * 2 - 1) * 5.0
    diag = torch.full((batch, d), 0.05**2)
    return loc.to(device), factor.to(device), diag.to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_log_density_of_its_own_draws_at_the_heads_bounds_is_float64s(device):
    loc, factor, diag = _at_the_heads_bounds(device=device)
    ours = LowRankMultivariateNormal(loc, factor, diag)
    torch.manual_seed(0)
    z = ours.expand((3, loc.shape[0])).sample()  # (3, 500, 40), float32
    exact = dist.LowRankMultivariateNormal(loc.double(), factor.double(), diag.double())
    reference = exact.log_prob(z.double())
    got = ours.log_prob(z)
    assert got.dtype == torch.float32 and got.shape == (3, 500)
    # float32's output rounding of values near -60 nats: about 4e-6
    assert (got.double() - reference).abs().max().item() < 2e-5
    torchs = dist.LowRankMultivariateNormal(loc, factor, diag).log_prob(z)
    assert (torchs.double() - reference).abs().max().item() > 0.05  # what was fixed


def test_gradients_are_float64s_within_float32_rounding():
    loc, factor, diag = _at_the_heads_bounds(batch=50, d=10, rank=2)
    z = LowRankMultivariateNormal(loc, factor, diag).sample()
    gradients = []
    for dtype, family in (
        (torch.float32, LowRankMultivariateNormal),
        (torch.float64, dist.LowRankMultivariateNormal),
    ):
        inputs = [t.to(dtype).clone().requires_grad_() for t in (loc, factor, diag)]
        family(*inputs).log_prob(z.to(dtype)).sum().backward()
        gradients.append([t.grad.double() for t in inputs])
    for ours, exact in zip(*gradients, strict=True):
        assert torch.allclose(ours, exact, rtol=1e-4, atol=1e-3 * exact.abs().max().item())


def test_float64_values_and_validation_are_torchs():
    loc, factor, diag = (t.double() for t in _at_the_heads_bounds(batch=4, d=3, rank=1))
    ours = LowRankMultivariateNormal(loc, factor, diag, validate_args=True)
    z = ours.sample((2,))
    torchs = dist.LowRankMultivariateNormal(loc, factor, diag).log_prob(z)
    assert torch.equal(ours.log_prob(z), torchs)
    with pytest.raises(ValueError, match="shape"):
        ours.log_prob(torch.zeros(4, 5, dtype=torch.float32))
    with pytest.raises(ValueError):
        ours.log_prob(torch.full((4, 3), float("nan")))


def test_the_lowrank_head_makes_it():
    head = LowRankHead(8, 4)
    q = head(torch.randn(6, 8))
    assert isinstance(q, LowRankMultivariateNormal)
    assert q.log_prob(q.rsample()).shape == (6,)
