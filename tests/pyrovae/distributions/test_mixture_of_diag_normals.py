"""pyrovae's MixtureOfDiagNormals draws what Pyro's does, from the same seed, with Pyro's
pathwise gradients (means, scales and mixture weights), and stays itself under
``expand``; unlike Pyro's, its draw is one operator that a recording keeps."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from pyrovae.distributions import MixtureOfDiagNormals


def _parameters(batch=(4,), k=3, d=5):
    torch.manual_seed(0)
    locs = torch.randn(*batch, k, d, dtype=torch.float64, requires_grad=True)
    raw_scales = torch.randn(*batch, k, d, dtype=torch.float64, requires_grad=True)
    logits = torch.randn(*batch, k, dtype=torch.float64, requires_grad=True)
    return locs, raw_scales, logits


@pytest.mark.parametrize("batch, sample_shape", [((4,), ()), ((), (3,)), ((), ())])
def test_the_same_draws_and_gradients_as_pyros(batch, sample_shape):
    # (a batch with a sample shape is where Pyro's draw is wrong: see the next test)
    locs, raw_scales, logits = _parameters(batch)
    upstream = torch.randn(*sample_shape, *batch, 5, dtype=torch.float64)
    results = []
    for family in (MixtureOfDiagNormals, dist.MixtureOfDiagNormals):
        torch.manual_seed(1)
        z = family(locs, raw_scales.exp(), logits).rsample(sample_shape)
        gradients = torch.autograd.grad((z * upstream).sum(), (locs, raw_scales, logits))
        results.append((z, gradients))
    (ours, our_gradients), (pyros, pyros_gradients) = results
    assert torch.equal(ours, pyros)
    for a, b in zip(our_gradients, pyros_gradients, strict=True):
        assert a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_a_batch_draws_each_element_from_its_own_components():
    # element b's two components sit at +-100 (b + 1) in every coordinate, scale 1e-3: a
    # draw from element b is +-100 (b + 1). Pyro's rsample((3,)) drew sample s of every
    # element from element s's components (all of sample 1 at +-200); rsample((6,)) raised
    # a size error.
    b = torch.arange(1, 5, dtype=torch.float64)
    locs = (100 * b[:, None, None] * torch.tensor([1.0, -1.0])[:, None]).expand(4, 2, 3)
    q = MixtureOfDiagNormals(locs, torch.full((4, 2, 3), 1e-3), torch.zeros(4, 2))
    z = q.rsample((6,))
    assert z.shape == (6, 4, 3)
    torch.testing.assert_close(z.abs(), (100 * b)[:, None].expand(6, 4, 3), atol=0.01, rtol=0)
    assert (z.sign() * z.sign()[..., :1] == 1).all()  # one component per draw
    assert z.std(0).sum() > 0  # the draws differ


def test_expand_keeps_the_class_and_the_draw_records():
    locs, raw_scales, logits = _parameters(batch=(), k=2, d=3)
    q = MixtureOfDiagNormals(locs, raw_scales.exp(), logits).expand((6,))
    assert type(q) is MixtureOfDiagNormals and q.batch_shape == (6,)

    def draw(locs, raw_scales, logits):
        return MixtureOfDiagNormals(locs, raw_scales.exp(), logits).expand((6,)).rsample()

    inputs = (locs, raw_scales, logits)
    with pyro.validation_enabled(False):  # as fit records: no checks that read values
        recording = make_fx(draw, pre_dispatch=True)(*inputs)
        torch.manual_seed(2)
        python = torch.autograd.grad(draw(*inputs).sum(), inputs)
    targets = {str(n.target) for n in recording.graph.nodes}
    assert "pyrovae.mixture_of_diag_normals_draw.default" in targets
    torch.manual_seed(2)
    replayed = torch.autograd.grad(recording(*inputs).sum(), inputs)
    for a, b in zip(replayed, python, strict=True):
        assert torch.equal(a, b)
