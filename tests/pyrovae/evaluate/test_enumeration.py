"""Enumerated discrete sites are summed out exactly, checked on a linear-Gaussian mixture
where everything is closed form:

    y ~ Cat(pi), z | y ~ N(m_y, s_y^2) (1-D), x | z ~ N(w z + b, sigma^2 I_D)
    => p(x | y) = N(w m_y + b, s_y^2 w w^T + sigma^2 I), p(z | x, y) Gaussian.

With q(z | x, y) = p(z | x, y) the log weight log p(x, y, z) - log q(z | x, y) equals
log p(x, y) for every z, so estimators must match the hand-computed sums exactly.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae.evaluate import elbo, log_likelihood
from pyrovae.train import make_objective

K, D = 3, 2
LOG_PI = torch.log_softmax(torch.tensor([0.3, -0.2, 0.1]), 0)
M = torch.tensor([-2.0, 0.5, 3.0])
S = torch.tensor([0.7, 1.2, 0.5])
W = torch.tensor([1.5, -0.8])
B = torch.tensor([0.2, 0.1])
SIGMA = 0.6


def model(x):
    with pyro.plate("data", x.shape[0]):
        y = pyro.sample("y", dist.Categorical(logits=LOG_PI))
        z = pyro.sample("z", dist.Normal(M[y], S[y]))
        pyro.sample("x", dist.Normal(z.unsqueeze(-1) * W + B, SIGMA).to_event(1), obs=x)


def exact_z_posterior(x, y):
    precision = 1 / S[y] ** 2 + (W @ W) / SIGMA**2
    var = 1 / precision
    mean = var * (M[y] / S[y] ** 2 + ((x - B) @ W) / SIGMA**2)
    return mean, var.sqrt()


def make_guide(log_q_y):
    """q(y | x) = softmax(log_q_y(x)) enumerated; q(z | x, y) = p(z | x, y) exactly."""

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample(
                "y", dist.Categorical(logits=log_q_y(x)), infer={"enumerate": "parallel"}
            )
            mean, scale = exact_z_posterior(x, y)
            pyro.sample("z", dist.Normal(mean, scale))

    return guide


def log_joint_y(x):
    """log p(x, y) for every y, shape (N, K)."""
    cov = torch.stack([S[k] ** 2 * torch.outer(W, W) + SIGMA**2 * torch.eye(D) for k in range(K)])
    mvn = dist.MultivariateNormal(M[:, None] * W + B, cov)  # batch (K,)
    return mvn.log_prob(x.unsqueeze(1)) + LOG_PI


@pytest.fixture
def x():
    pyro.set_rng_seed(0)
    y = dist.Categorical(logits=LOG_PI).sample((40,))
    z = M[y] + S[y] * torch.randn(40)
    return z.unsqueeze(-1) * W + B + SIGMA * torch.randn(40, D)


def uniform(x):
    return torch.zeros(x.shape[0], K)


def test_log_likelihood_sums_y_out_exactly(x):
    exact = torch.logsumexp(log_joint_y(x), -1)
    estimate = log_likelihood(model, make_guide(uniform), x, num_samples=7, sample_chunk=3)
    torch.testing.assert_close(estimate, exact, atol=1e-4, rtol=1e-5)


def test_elbo_is_the_explicit_sum_over_clusters(x):
    """q(y|x) uniform: ELBO_n = sum_y q(y) [log p(x_n, y) - log q(y)], by hand."""
    by_hand = (log_joint_y(x) + math.log(K)).mean(-1)
    ours = elbo(model, make_guide(uniform), x, num_samples=2)
    torch.testing.assert_close(ours, by_hand, atol=1e-4, rtol=1e-5)
    loss = make_objective("TraceEnum_ELBO").loss(model, make_guide(uniform), x)
    assert -loss == pytest.approx(by_hand.sum().item(), rel=1e-5)


def test_the_exact_posterior_over_y_makes_the_elbo_log_p_x(x):
    posterior = lambda rows: log_joint_y(rows)  # noqa: E731  q(y|x) = p(y|x) up to a constant
    exact = torch.logsumexp(log_joint_y(x), -1)
    torch.testing.assert_close(elbo(model, make_guide(posterior), x), exact, atol=1e-4, rtol=1e-5)


def test_an_automatic_chunk_that_runs_out_of_gpu_memory_is_halved(x, monkeypatch):
    """The enumerated path chunks its draws as the continuous one does (chunked_draws)."""
    from pyrovae.evaluate import estimators

    real, asked = estimators.enumerated_log_weights, []

    def fits_in_3_draws(model, guide, rows, num_samples):
        asked.append(num_samples)
        if num_samples > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, guide, rows, num_samples)

    monkeypatch.setattr(estimators, "enumerated_log_weights", fits_in_3_draws)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    exact = torch.logsumexp(log_joint_y(x), -1)
    estimate = log_likelihood(model, make_guide(uniform), x, num_samples=7)
    assert asked == [7, 3, 3, 1]  # 7 did not fit: halved to 3, then the 1 draw left
    torch.testing.assert_close(estimate, exact, atol=1e-4, rtol=1e-5)
