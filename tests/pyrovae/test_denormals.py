"""flushed_denormals: subnormal floats read as zero inside, the mode found on entry is
restored on exit (also after an error), and fit trains under it without leaking it.
logsumexp: torch's values and gradients, the underflowing terms left out, and it is what
the mixture prior and the importance-sampled log p(x) use."""

import math

import pytest
import torch

from pyrovae import fit
from pyrovae.denormals import denormals_flushed, flushed_denormals, logsumexp

SUBNORMAL = 1e-40  # float32: below the smallest normal number, 1.18e-38


def subnormal_survives() -> bool:
    return (torch.tensor(SUBNORMAL) * 2.0).item() != 0.0


@pytest.fixture(autouse=True)
def plain_ieee_mode():
    torch.set_flush_denormal(False)
    yield
    torch.set_flush_denormal(False)


def test_inside_subnormals_are_zero_and_the_mode_is_restored():
    if not torch.set_flush_denormal(False):  # pragma: no cover - CPUs without SSE3
        pytest.skip("this CPU cannot flush subnormal floats")
    assert subnormal_survives() and not denormals_flushed()
    with flushed_denormals("cpu"):
        assert denormals_flushed() and not subnormal_survives()
    assert subnormal_survives()
    with pytest.raises(RuntimeError), flushed_denormals("cpu"):
        raise RuntimeError("boom")
    assert subnormal_survives()


def test_a_mode_already_on_is_left_on():
    if not torch.set_flush_denormal(True):  # pragma: no cover
        pytest.skip("this CPU cannot flush subnormal floats")
    with flushed_denormals("cpu"):
        assert denormals_flushed()
    assert denormals_flushed()


def test_fit_trains_with_subnormals_flushed_and_restores_the_mode(digits, monkeypatch):
    from guides import build_guide
    from models import build_vae
    from pyrovae.train import loop

    seen = []
    original = loop._train_epoch

    def spy(*args, **kwargs):
        seen.append(denormals_flushed())
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "_train_epoch", spy)
    guide = build_guide(64, 2, "diagonal", (16,))
    model = build_vae(64, 2, (16,))
    fit(model, guide, digits, epochs=2, batch_size=256, progress=False)
    assert seen == [True, True]
    assert subnormal_survives()


def spread_log_terms(dtype, rows=6, k=500):
    """Log terms like a trained VampPrior's: one near the top, the rest up to 3,000 nats
    below it, so that most exp(term - max) underflow."""
    generator = torch.Generator().manual_seed(0)
    values = -3000 * torch.rand(rows, k, generator=generator, dtype=dtype)
    values[:, :5] = torch.randn(rows, 5, generator=generator, dtype=dtype)
    return values


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_logsumexp_gives_torchs_values_and_gradients(dtype, dim):
    # the gradient is softmax(values), against float64's: torch's float32 backward takes
    # exp(value - result) with both near -3,000 and loses digits that ours keeps
    values = spread_log_terms(dtype).requires_grad_()
    ours = logsumexp(values, dim)
    torch.testing.assert_close(ours, torch.logsumexp(values, dim))
    weights = torch.randn(ours.shape, dtype=dtype)
    (ours_grad,) = torch.autograd.grad((weights * ours).sum(), values)
    exact_grad = weights.double().unsqueeze(dim) * torch.softmax(values.double(), dim)
    tiny = torch.finfo(dtype).tiny
    # exp(value - max) with |value - max| up to 87 (float32): about 87 ulp of rounding
    # and a term left out is below e * tiny before its weight
    rtol = 200 * torch.finfo(dtype).eps
    bound = math.e * tiny * weights.abs().max().item()
    torch.testing.assert_close(ours_grad, exact_grad.to(dtype), rtol=rtol, atol=bound)
    # the terms left out: zero gradient here
    shifted = values.detach() - values.detach().amax(dim, keepdim=True)
    left_out = shifted < math.log(tiny) + 1.0
    assert left_out.float().mean() > 0.5
    assert (ours_grad[left_out] == 0).all()
    assert exact_grad[left_out].abs().max() < bound
    with torch.no_grad():  # the in-place path, on a copy: the input is left as it was
        before = values.detach().clone()
        torch.testing.assert_close(logsumexp(values, dim), ours.detach())
        assert torch.equal(values, before)


@pytest.mark.parametrize(
    "row, expected",
    [
        ([-math.inf, -math.inf], -math.inf),
        ([math.inf, -math.inf], math.inf),
        ([math.nan, 0.0], math.nan),
        ([-1e30, 0.0], 0.0),
    ],
)
def test_logsumexp_of_infinite_and_missing_values_is_torchs(row, expected):
    for dtype in (torch.float32, torch.float64):
        value = logsumexp(torch.tensor([row], dtype=dtype), -1)
        torch.testing.assert_close(value, torch.tensor([expected], dtype=dtype), equal_nan=True)


def test_logsumexp_on_other_devices_is_torchs(monkeypatch):
    # a GPU computes such an exp at full speed: there torch's own logsumexp runs
    calls = []
    monkeypatch.setattr(torch, "logsumexp", lambda value, dim: calls.append(dim) or value)
    meta = torch.empty(3, 4, device="meta")
    assert logsumexp(meta, -1) is meta and calls == [-1]
    logsumexp(torch.zeros(3, 4), -1)
    assert calls == [-1]  # not on the CPU


def test_logsumexp_of_other_dtypes_and_empty_rows_is_torchs():
    half = torch.tensor([[0.0, -10.0, -20.0]], dtype=torch.float16)
    assert torch.equal(logsumexp(half, -1), torch.logsumexp(half, -1))
    empty = torch.zeros(3, 0)
    assert torch.equal(logsumexp(empty, -1), torch.logsumexp(empty, -1))


def test_the_mixture_prior_and_the_log_likelihood_use_it(monkeypatch):
    import pyro.distributions as dist

    from pyrovae.distributions import SharedComponentMixture, mixture
    from pyrovae.evaluate import estimators

    calls = []

    def spy(value, dim):
        calls.append(tuple(value.shape))
        return logsumexp(value, dim)

    monkeypatch.setattr(mixture, "logsumexp", spy)
    monkeypatch.setattr(estimators, "logsumexp", spy)
    components = dist.Normal(torch.randn(7, 3), torch.ones(7, 3)).to_event(1)
    prior = SharedComponentMixture(torch.zeros(7), components).expand((4,))
    prior.log_prob(torch.randn(4, 3))
    assert calls == [(4, 7)]
    estimators.rows_log_likelihood(
        *_tiny_pair(), torch.rand(4, 2).round(), 6, 4, None, enumerated=False
    )
    assert calls[1:] == [(6, 4)]


def _tiny_pair():
    import pyro
    import pyro.distributions as dist

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=z).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))

    return model, guide
