"""One battery over one fixture table: every distribution the library adds (and the ones its
priors and guide families use) gets shapes and ``expand``, support, ``log_prob`` against an
outside oracle, sample moments, ``rsample`` gradients against finite differences of the
exact expectation, entropy and KL against Monte Carlo. Adding a distribution = one row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats
import torch
from pyro.distributions import Normal
from torch.distributions import kl_divergence

from pyrovae.distributions import (
    Dirichlet,
    HypersphericalUniform,
    LowRankMultivariateNormal,
    MixtureOfDiagNormals,
    MultivariateNormal,
    PowerSpherical,
    SharedComponentMixture,
    StandardNormal,
    VonMisesFisher,
    log_sphere_area,
)

F64 = torch.float64


def unit(*shape):
    return torch.nn.functional.normalize(torch.randn(*shape, dtype=F64), dim=-1)


def vmf_oracle(q, z):
    """scipy.stats.vonmises_fisher log densities, shape (S, B)."""
    out = np.empty(z.shape[:-1])
    for b in range(q.batch_shape[0]):
        oracle = scipy.stats.vonmises_fisher(q.loc[b].numpy(), q.concentration[b].item())
        out[:, b] = oracle.logpdf(z[:, b].numpy())
    return out


def dirichlet_oracle(q, z):
    out = np.empty(z.shape[:-1])
    for b in range(q.batch_shape[0]):
        alpha = q.concentration[b].numpy()
        out[:, b] = [scipy.stats.dirichlet(alpha).logpdf(v) for v in z[:, b].numpy()]
    return out


def mixture_oracle(q, z):
    loc, scale = q.components.base_dist.loc.numpy(), q.components.base_dist.scale.numpy()
    comps = np.stack(
        [scipy.stats.norm(loc[k], scale[k]).logpdf(z.numpy()).sum(-1) for k in range(len(loc))],
        -1,
    )
    return scipy.special.logsumexp(comps + q.log_weights.numpy(), -1)


def diag_normal_mixture_oracle(q, z):
    """log sum_k pi_k N(z; mu_k, diag(sigma_k^2)) for a batch of mixtures, shape (S, B)."""
    locs, scales = q.locs.numpy(), q.coord_scale.numpy()  # (B, K, d)
    log_pi = scipy.special.log_softmax(q.component_logits.numpy(), -1)  # (B, K)
    components = scipy.stats.norm(locs, scales).logpdf(z.numpy()[:, :, None, :]).sum(-1)
    return scipy.special.logsumexp(components + log_pi, -1)


def multivariate_normal_oracle(q, z):
    """scipy.stats.multivariate_normal log densities, shape (S, B)."""
    out = np.empty(z.shape[:-1])
    for b in range(q.batch_shape[0]):
        covariance = (q.scale_tril[b] @ q.scale_tril[b].T).numpy()
        oracle = scipy.stats.multivariate_normal(q.loc[b].numpy(), covariance)
        out[:, b] = oracle.logpdf(z[:, b].numpy())
    return out


def _lower_factor(batch, d):
    """A Cholesky factor with unit lower-triangular part U and positive diagonal s."""
    unit = torch.tril(torch.randn(batch, d, d, dtype=F64), -1) + torch.eye(d, dtype=F64)
    return unit * (torch.rand(batch, d, dtype=F64) + 0.3).unsqueeze(-2)


def rotation_symmetric_normaliser(q):
    """For a distribution on S^{d-1} depending on z only through t = mu^T z (mu = e_1):
    int p(t) area(S^{d-2}) (1 - t^2)^{(d-3)/2} dt, which must be 1."""
    d = q.event_shape[0]

    def density(t):
        z = torch.zeros(1, d, dtype=F64)
        z[0, 0], z[0, 1] = t, math.sqrt(max(0.0, 1 - t * t))
        log_p = q.log_prob(z).item()
        return math.exp(log_p + log_sphere_area(d - 1)) * (1 - t * t) ** ((d - 3) / 2)

    return scipy.integrate.quad(density, -1, 1, limit=200, points=[0.9, 0.99])[0]


@dataclass
class Row:
    name: str
    make: Callable  # () -> distribution with batch shape (B,)
    oracle: Callable | None = None  # (q, z (S, B, d)) -> log densities (S, B)
    reference: Callable | None = None  # q -> p for KL(q || p) against Monte Carlo
    reparameterized: tuple[str, ...] = ()  # parameters whose rsample gradient is checked
    normalised_on_sphere: bool = False
    tags: set = field(default_factory=set)


def _e1(d):
    loc = torch.zeros(1, d, dtype=F64)
    loc[0, 0] = 1
    return loc


ROWS = [
    Row(
        "vmf-d3",
        lambda: VonMisesFisher(unit(3, 3), torch.tensor([0.3, 4.0, 60.0], dtype=F64)),
        vmf_oracle,
        lambda q: HypersphericalUniform(3, dtype=F64),
        ("concentration", "loc"),
    ),
    Row(
        "vmf-d5",
        lambda: VonMisesFisher(unit(3, 5), torch.tensor([0.01, 2.0, 25.0], dtype=F64)),
        vmf_oracle,
        lambda q: HypersphericalUniform(5, dtype=F64),
        ("concentration", "loc"),
    ),
    Row(
        "vmf-d64",
        lambda: VonMisesFisher(unit(2, 64), torch.tensor([5.0, 300.0], dtype=F64)),
        vmf_oracle,
        lambda q: HypersphericalUniform(64, dtype=F64),
        ("concentration", "loc"),
    ),
    Row(
        "vmf-normaliser-d10",
        lambda: VonMisesFisher(_e1(10), torch.tensor([7.0], dtype=F64)),
        normalised_on_sphere=True,
    ),
    Row(
        "power-spherical-d3",
        lambda: PowerSpherical(unit(3, 3), torch.tensor([0.5, 4.0, 80.0], dtype=F64)),
        None,
        lambda q: HypersphericalUniform(3, dtype=F64),
        ("concentration", "loc"),
    ),
    Row(
        "power-spherical-d16",
        lambda: PowerSpherical(unit(2, 16), torch.tensor([1.0, 50.0], dtype=F64)),
        None,
        lambda q: HypersphericalUniform(16, dtype=F64),
        ("concentration", "loc"),
    ),
    Row(
        "power-spherical-normaliser-d6",
        lambda: PowerSpherical(_e1(6), torch.tensor([9.0], dtype=F64)),
        normalised_on_sphere=True,
    ),
    Row(
        "uniform-sphere-d4",
        lambda: HypersphericalUniform(4, (3,), dtype=F64),
        lambda q, z: np.full(z.shape[:-1], -math.log(2 * math.pi**2)),  # area(S^3) = 2 pi^2
        normalised_on_sphere=True,
    ),
    Row(
        "dirichlet-d4",
        lambda: Dirichlet(torch.tensor([[0.5, 1, 2, 3], [4, 4, 4, 4], [9, 1, 1, 0.7]], dtype=F64)),
        dirichlet_oracle,
        lambda q: Dirichlet(torch.ones(4, dtype=F64)),
        ("concentration",),
    ),
    Row(
        "mixture-of-diag-normals",  # its pathwise gradients: test_mixture_of_diag_normals.py
        lambda: MixtureOfDiagNormals(
            torch.randn(3, 2, 4, dtype=F64),
            torch.rand(3, 2, 4, dtype=F64) + 0.3,
            torch.tensor([[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]], dtype=F64),
        ),
        diag_normal_mixture_oracle,
    ),
    Row(
        "multivariate-normal",  # its own draws are scored from their noise
        lambda: MultivariateNormal(torch.randn(3, 4, dtype=F64), scale_tril=_lower_factor(3, 4)),
        multivariate_normal_oracle,
        lambda q: Normal(torch.zeros(4, dtype=F64), 1.5 * torch.ones(4, dtype=F64)).to_event(1),
    ),
    Row(
        "low-rank-multivariate-normal",  # float32 scoring: test_low_rank_multivariate_normal.py
        lambda: LowRankMultivariateNormal(
            torch.randn(3, 4, dtype=F64),
            torch.randn(3, 4, 2, dtype=F64),
            torch.rand(3, 4, dtype=F64) + 0.1,
        ),
        multivariate_normal_oracle,
        lambda q: Normal(torch.zeros(4, dtype=F64), 1.5 * torch.ones(4, dtype=F64)).to_event(1),
    ),
    Row(
        "standard-normal",
        lambda: StandardNormal(torch.zeros(3, 2, dtype=F64)).to_event(1),
        lambda q, z: scipy.stats.norm.logpdf(z.numpy()).sum(-1),
        lambda q: StandardNormal(torch.zeros(2, dtype=F64)).to_event(1),
    ),
    Row(
        "mixture-of-normals",
        lambda: SharedComponentMixture(
            torch.tensor([0.0, 1.0, -1.0], dtype=F64),
            Normal(torch.randn(3, 2, dtype=F64), torch.rand(3, 2, dtype=F64) + 0.3).to_event(1),
        ).expand((4,)),
        mixture_oracle,
    ),
    Row(
        "mixture-of-vmf",
        lambda: SharedComponentMixture(
            torch.zeros(2, dtype=F64),
            VonMisesFisher(unit(2, 3), torch.tensor([3.0, 10.0], dtype=F64)),
        ).expand((2,)),
        lambda q, z: (
            scipy.special.logsumexp(
                np.stack(
                    [
                        scipy.stats.vonmises_fisher(
                            q.components.loc[k].numpy(), q.components.concentration[k].item()
                        ).logpdf(z.reshape(-1, 3).numpy())
                        for k in range(2)
                    ],
                    -1,
                ),
                -1,
            ).reshape(z.shape[:-1])
            - math.log(2)
        ),
    ),
]
IDS = [row.name for row in ROWS]


@pytest.fixture(params=ROWS, ids=IDS)
def row(request):
    torch.manual_seed(0)
    return request.param


def test_shapes_and_expand(row):
    q = row.make()
    (batch,) = q.batch_shape
    z = q.sample((7,))
    assert z.shape == (7, batch, *q.event_shape)
    assert q.log_prob(z).shape == (7, batch)
    wide = q.expand((2, batch))
    assert wide.batch_shape == (2, batch)
    assert wide.sample((3,)).shape == (3, 2, batch, *q.event_shape)
    torch.testing.assert_close(
        wide.log_prob(z[:, None]), q.log_prob(z)[:, None].expand(7, 2, batch)
    )


def test_samples_lie_in_the_support(row):
    q = row.make()
    z = q.sample((200,))
    assert bool(q.support.check(z).all())
    assert torch.isfinite(q.log_prob(z)).all()


@pytest.mark.parametrize("row", [r for r in ROWS if r.oracle], ids=lambda r: r.name)
def test_log_prob_matches_the_oracle(row):
    q = row.make()
    z = q.sample((5,))
    np.testing.assert_allclose(q.log_prob(z).numpy(), row.oracle(q, z), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("row", [r for r in ROWS if r.normalised_on_sphere], ids=lambda r: r.name)
def test_density_on_the_sphere_integrates_to_one(row):
    q = row.make()
    first = q if q.batch_shape == (1,) else q.expand((1,))
    assert rotation_symmetric_normaliser(first) == pytest.approx(1.0, abs=1e-7)


def test_sample_mean_matches_the_closed_form(row):
    q = row.make()
    num = 20000
    z = q.sample((num,))
    se = z.std(0) / math.sqrt(num)
    assert ((z.mean(0) - q.mean).abs() <= 5 * se + 1e-9).all(), (z.mean(0), q.mean)


@pytest.mark.parametrize(
    "row, parameter",
    [(r, p) for r in ROWS for p in r.reparameterized],
    ids=lambda v: v.name if isinstance(v, Row) else v,
)
def test_rsample_gradients_match_finite_differences(row, parameter):
    """d/dtheta E[c^T z] by the average pathwise gradient vs a central finite difference of
    the exact expectation c^T E[z] (E[z] itself is checked against samples above). For a
    direction mu only the tangent part of the gradient is defined."""
    q = row.make()
    c = torch.randn(q.event_shape, dtype=F64)
    theta = getattr(q, parameter).detach().clone().requires_grad_()
    build = lambda t: type(q)(**{**_params(q), parameter: t})  # noqa: E731
    num = 100000
    (build(theta).rsample((num,)) @ c).mean(0).sum().backward()
    h = 1e-5
    if parameter == "concentration":  # directional derivative along a random direction
        direction = theta.detach() * (0.5 + torch.rand_like(theta))
        up, down = theta.detach() + h * direction, theta.detach() - h * direction
        fd = ((build(up).mean - build(down).mean) @ c) / (2 * h)
        pathwise = theta.grad * direction
        if pathwise.dim() > fd.dim():
            pathwise = pathwise.sum(-1)
    else:  # loc on the sphere: compare tangent projections
        mu = theta.detach()
        projector = torch.eye(mu.shape[-1], dtype=F64) - mu[..., :, None] * mu[..., None, :]
        fd = (projector @ (_mean_length(q).unsqueeze(-1) * c).unsqueeze(-1)).squeeze(-1)
        pathwise = (projector @ theta.grad.unsqueeze(-1)).squeeze(-1)
    scale = fd.abs().max()
    torch.testing.assert_close(pathwise, fd, atol=0.03 * scale + 1e-3, rtol=0.03)


def _params(q):
    if isinstance(q, Dirichlet):
        return {"concentration": q.concentration}
    return {"loc": q.loc, "concentration": q.concentration}


def _mean_length(q):
    return q.mean.norm(dim=-1)


def test_entropy_and_kl_match_monte_carlo(row):
    q = row.make()
    num = 40000
    z = q.sample((num,))
    log_q = q.log_prob(z)
    try:
        entropy = q.entropy()
    except NotImplementedError:
        entropy = None
    if entropy is not None:
        se = log_q.std(0) / math.sqrt(num)
        assert ((entropy + log_q.mean(0)).abs() <= 5 * se + 1e-6).all()
    if row.reference is None:
        return
    p = row.reference(q)
    kl = kl_divergence(q, p)
    mc = log_q - p.log_prob(z)
    se = mc.std(0) / math.sqrt(num)
    assert ((kl - mc.mean(0)).abs() <= 5 * se + 1e-6).all(), (kl, mc.mean(0))


def test_every_added_distribution_has_a_row():
    import pyrovae.distributions as module

    added = {
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, torch.distributions.Distribution)
    }
    made = [row.make() for row in ROWS]
    covered = {type(q) for q in made} | {type(q.base_dist) for q in made if hasattr(q, "base_dist")}
    assert added <= covered, f"add rows for {added - covered}"
