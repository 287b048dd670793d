"""pyrovae.bounds: scales kept in [min_value, max_value) for any raw output, with the floor
exact, values well inside the range nearly unchanged, and a gradient everywhere."""

import math

import pytest
import torch
from torch.nn.functional import softplus

from pyrovae.bounds import check_scale_range, inverse_softplus, positive, soft_upper_bound
from pyrovae.errors import PyrovaeError

RAW = torch.cat([torch.linspace(-1e4, 1e4, 2001), torch.linspace(-30, 30, 601)])


@pytest.mark.parametrize("y", [1e-6, 0.05, 1.0, 2.668, 30.0])
def test_inverse_softplus_inverts_softplus(y):
    assert softplus(torch.tensor(inverse_softplus(y), dtype=torch.float64)).item() == (
        pytest.approx(y, rel=1e-12)
    )


@pytest.mark.parametrize("bound", [15.0, None])
def test_a_ceiling_holds_for_any_raw_output_and_the_floor_stays_exact(bound):
    scale = positive(RAW, 0.05, bound=bound, max_value=math.e)
    assert scale.max().item() <= math.e
    assert scale.min().item() == pytest.approx(0.05, abs=1e-6)
    # the ceiling is approached from inside: a raw output of 10 is within 0.01 of e
    assert positive(torch.tensor(10.0), 0.05, max_value=math.e).item() > math.e - 0.01


def test_well_below_the_ceiling_a_scale_is_nearly_the_unbounded_one():
    raw = torch.linspace(-6, -1, 51)  # scales from 0.05 to about 0.36: posterior-sized
    unbounded = positive(raw, 0.05)
    bounded = positive(raw, 0.05, max_value=math.e)
    assert ((bounded - unbounded).abs() / unbounded).max().item() < 0.02


def test_the_bounded_scale_passes_a_gradient_everywhere():
    raw = torch.tensor([-50.0, -5.0, 0.0, 5.0, 20.0], requires_grad=True)
    positive(raw, 0.05, bound=None, max_value=math.e).sum().backward()
    assert (raw.grad > 0).all()  # increasing, with no flat region (unlike Hardtanh)


def test_no_ceiling_leaves_the_scale_as_it_was():
    assert torch.equal(positive(RAW, 0.05), softplus(15.0 * torch.tanh(RAW / 15.0)) + 0.05)
    assert torch.equal(positive(RAW, 1e-3, bound=None), softplus(RAW) + 1e-3)


def test_the_soft_upper_bound_is_below_its_ceiling_and_close_to_x_far_below_it():
    x = torch.linspace(-20, 50, 701)
    y = soft_upper_bound(x, 2.0)
    assert (y <= 2.0).all() and (y <= x + 1e-5).all()  # equal to 2 once float32 rounds
    assert (x - y)[x < -5].max().item() < 1e-3


@pytest.mark.parametrize(
    "low, high, message",
    [(-0.1, math.inf, "must be >= 0"), (0.05, 0.05, "must be above"), (1.0, 0.5, "use inf")],
)
def test_a_range_that_is_empty_or_negative_is_refused(low, high, message):
    with pytest.raises(PyrovaeError, match=message):
        check_scale_range(low, high)
