"""pyrovae's Dirichlet draws what torch's does, from the same seed, with the same implicit
gradients, and stays itself under ``expand`` (Pyro's plates expand a guide's
distribution); unlike torch's, its draw is one operator that a recording keeps."""

import pyro.distributions as dist
import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from pyrovae.distributions import Dirichlet


@pytest.mark.parametrize("sample_shape", [(), (3,), (2, 5)])
def test_the_same_draws_and_gradients_as_torchs_dirichlet(sample_shape):
    raw = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(*sample_shape, 4, 6, dtype=torch.float64)
    results = []
    for family in (Dirichlet, dist.Dirichlet):
        torch.manual_seed(0)
        z = family(raw.exp()).rsample(sample_shape)
        (gradient,) = torch.autograd.grad((z * upstream).sum(), raw)
        results.append((z, gradient))
    (ours, our_gradient), (torchs, torchs_gradient) = results
    assert torch.equal(ours, torchs)
    torch.testing.assert_close(our_gradient, torchs_gradient, rtol=1e-12, atol=1e-12)


def test_expand_keeps_the_class_and_the_draw_records():
    q = Dirichlet(torch.ones(3)).expand((4, 2))
    assert type(q) is Dirichlet and q.batch_shape == (4, 2)

    def draw(concentration):
        return Dirichlet(concentration, validate_args=False).rsample()

    concentration = torch.full((5, 3), 0.7, requires_grad=True)
    recording = make_fx(draw, pre_dispatch=True)(concentration)
    assert "pyrovae.dirichlet_draw.default" in {str(n.target) for n in recording.graph.nodes}
    torch.manual_seed(1)
    (python,) = torch.autograd.grad(draw(concentration)[:, 0].sum(), concentration)
    torch.manual_seed(1)
    (replayed,) = torch.autograd.grad(recording(concentration)[:, 0].sum(), concentration)
    assert torch.equal(replayed, python)
    assert python.abs().sum() > 0
