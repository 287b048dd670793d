"""A mixture whose K components are shared by every element of its batch: the form of the
mixture-of-Gaussians prior and the VampPrior.

    p(z) = sum_k pi_k p_k(z),    log p(z) = logsumexp_k [log pi_k + log p_k(z)]

The components form ONE distribution with batch shape ``(K,)`` (any family: Normal,
MultivariateNormal, flows, von Mises-Fisher...). Expanding the mixture to a plate's batch
does not copy them: ``log_prob`` broadcasts the value against the K components. Two
Gaussian families skip the ``(..., K, d)`` broadcast that keeps a 500-component VampPrior
slow: diagonal Normal components take two matrix products, full-covariance
(``MultivariateNormal``) components one matrix product per chunk of values
(:func:`multivariate_normal_log_probs`).
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import Independent, MultivariateNormal, Normal

from pyrovae.errors import PyrovaeError


def _diagonal_normal_parts(components) -> tuple[torch.Tensor, torch.Tensor] | None:
    if (
        isinstance(components, Independent)
        and isinstance(components.base_dist, Normal)
        and components.reinterpreted_batch_ndims == 1
        and len(components.batch_shape) == 1
    ):
        return components.base_dist.loc, components.base_dist.scale
    return None


# floats in the (K, d, n) block multivariate_normal_log_probs projects at once: n values
# with K d n <= this (at least one value). About 8 MB in float32, so the block stays in a
# large cache between the product, the subtraction and the squares: at evaluation sizes
# (K = 500, d = 40, 5,000 values) 2,048 values at once took 0.92 s, 128 took 0.32 s
PROJECTED_FLOATS = 2**21


@torch.library.custom_op("pyrovae::squared_projected_distances", mutates_args=())
def _squared_projected_distances(
    rows: torch.Tensor, shift: torch.Tensor, values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m, r)``: ``m[k, i] = ||A_k v_i - c_k||^2``, shape ``(K, n)``, and the residuals
    ``r = A_k v_i - c_k``, shape ``(K, d, n)`` (returned so the backward can keep them; not
    differentiable), for ``rows`` = the K matrices A_k stacked to ``(K d, d)``, ``shift`` =
    c_k = A_k mu_k as ``(K, d, 1)`` and ``values`` v_i as ``(n, d)``.

    Autograd would record the product, the subtraction and the square as three
    ``(K, d, n)`` nodes: a copy for the difference, two products and a negation on the way
    back, where this needs one ``(K, d, n)`` block saved and one product. With
    ``g_k,i = dL/dm[k, i]``, the gradients are

        dL/dr = 2 g r,   dL/dA = sum_i dL/dr v_i^T,   dL/dv_i = sum_k A_k^T dL/dr,
        dL/dc_k = -sum_i dL/dr.

    A custom operator rather than a ``torch.autograd.Function``: a recording of the loss
    (``fit``'s default) keeps it whole with this backward, where it inlined a Function's
    forward and let autograd record the three nodes (the recorded ``vamp+full`` step of
    the Fashion-MNIST protocol was then 1.03 times the Python one, now 0.975:
    ``benchmarks/guide_families.py --prior vamp --protocol``). ``benchmarks/vamp_prior.py``
    times the VampPrior training path that uses it."""
    k = shift.shape[0]
    residual = (rows @ values.T).view(k, -1, values.shape[0]).sub_(shift)
    return residual.square().sum(1), residual


@_squared_projected_distances.register_fake
def _(rows, shift, values):
    k, d, n = shift.shape[0], shift.shape[1], values.shape[0]
    return rows.new_empty(k, n), rows.new_empty(k, d, n)


def _save_residual(ctx, inputs, output):
    rows, _, values = inputs
    ctx.save_for_backward(rows, values, output[1])
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)


def _squared_projected_distances_backward(ctx, grad, _):
    if grad is None:
        return None, None, None
    rows, values, residual = ctx.saved_tensors
    grad_residual = residual * (2 * grad).unsqueeze(1)  # (K, d, n)
    flat = grad_residual.view(-1, values.shape[0])  # (K d, n)
    need_rows, need_shift, need_values = ctx.needs_input_grad
    grad_rows = flat @ values if need_rows else None
    grad_shift = -grad_residual.sum(-1, keepdim=True) if need_shift else None
    grad_values = flat.T @ rows if need_values else None
    return grad_rows, grad_shift, grad_values


_squared_projected_distances.register_autograd(
    _squared_projected_distances_backward, setup_context=_save_residual
)


def multivariate_normal_log_probs(
    value: torch.Tensor, loc: torch.Tensor, scale_tril: torch.Tensor
) -> torch.Tensor:
    """log N(value; loc_k, L_k L_k^T) for each of K components, shape ``(*value_batch, K)``
    for ``value`` of shape ``(*value_batch, d)``, ``loc`` ``(K, d)``, ``scale_tril`` ``(K,
    d, d)`` (nats).

    With A_k = L_k^{-1} (K triangular inverses, d x d each) the Mahalanobis term is
    ``||A_k value - A_k loc_k||^2``: ONE ``(K d, d) x (d, n)`` matrix product for a chunk of n
    values. torch's ``MultivariateNormal.log_prob`` instead copies the values to
    ``(..., K, d)`` and solves K batched triangular systems, several times slower forward
    and backward for a 500-component VampPrior (``benchmarks/vamp_prior.py``). The
    subtraction follows the projection, so the float32 rounding of the projected value is
    about ``1.2e-7 * ||A_k value||``, proportional to 1 / (the components' scale); the tests
    check it against float64 down to a scale of 1e-3. Memory: about
    :data:`PROJECTED_FLOATS` floats per chunk (``K d n`` for a chunk of n values), kept for
    the backward pass where autograd records (:func:`_squared_projected_distances`), and
    subtracted and squared in place where it records nothing (evaluation).
    """
    k, d = loc.shape
    eye = torch.eye(d, dtype=loc.dtype, device=loc.device).expand(k, d, d)
    inverse = torch.linalg.solve_triangular(scale_tril, eye, upper=False)  # (K, d, d)
    rows = inverse.reshape(k * d, d)
    shift = inverse @ loc.unsqueeze(-1)  # (K, d, 1)
    flat = value.reshape(-1, d)
    recorded = torch.is_grad_enabled() and any(t.requires_grad for t in (flat, rows, shift))
    chunk_size = max(1, PROJECTED_FLOATS // (k * d))
    parts = []
    for start in range(0, flat.shape[0], chunk_size):
        chunk = flat[start : start + chunk_size]
        if recorded:
            squared, _ = _squared_projected_distances(rows, shift, chunk)
        else:
            projected = (rows @ chunk.T).reshape(k, d, -1)  # (K, d, n)
            squared = projected.sub_(shift).square_().sum(1)
        parts.append(squared.T)  # (n, K)
    mahalanobis = parts[0] if len(parts) == 1 else torch.cat(parts)
    half_log_det = scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (K,)
    log_probs = -0.5 * (d * math.log(2 * math.pi) + mahalanobis) - half_log_det
    return log_probs.reshape(*value.shape[:-1], k)


class SharedComponentMixture(TorchDistribution):
    """Mixture of the K components of ``components`` with weights ``softmax(logits)``.

    Args:
        logits: mixing logits, shape ``(K,)`` (zeros for equal weights 1/K).
        components: a distribution with batch shape ``(K,)`` and event shape ``(d,)``.
        batch_shape: the mixture's own batch shape (what a plate expands it to).
    """

    arg_constraints: dict = {}

    def __init__(self, logits, components, batch_shape=(), validate_args=None):
        if len(components.batch_shape) != 1:
            raise PyrovaeError(
                f"components must have batch shape (K,), got {tuple(components.batch_shape)}"
            )
        k = components.batch_shape[0]
        self.components = components
        self.num_components = k
        if logits.shape != (k,):
            raise PyrovaeError(f"logits must have shape ({k},), got {tuple(logits.shape)}")
        self.log_weights = torch.log_softmax(logits, -1)
        self.has_rsample = False
        super().__init__(torch.Size(batch_shape), components.event_shape, validate_args)

    @property
    def support(self):
        return self.components.support

    def expand(self, batch_shape, _instance=None):
        return SharedComponentMixture(
            self.log_weights, self.components, batch_shape, validate_args=False
        )

    def component_log_probs(self, value: torch.Tensor) -> torch.Tensor:
        """log p_k(value) for every component, shape ``(*value_batch, K)``."""
        parts = _diagonal_normal_parts(self.components)
        if parts is not None:
            loc, scale = parts  # (K, d)
            precision = scale.pow(-2)
            quadratic = (
                value.pow(2) @ precision.T
                - 2 * value @ (loc * precision).T
                + (loc.pow(2) * precision).sum(-1)
            )
            d = loc.shape[-1]
            log_det = scale.log().sum(-1)
            return -0.5 * quadratic.clamp_min(0) - log_det - 0.5 * d * math.log(2 * math.pi)
        if isinstance(self.components, MultivariateNormal):
            return multivariate_normal_log_probs(
                value, self.components.loc, self.components.scale_tril
            )
        event_dims = len(self.event_shape)
        expanded = value.unsqueeze(-1 - event_dims)
        expanded = expanded.expand(
            *value.shape[: value.dim() - event_dims], self.num_components, *self.event_shape
        )
        return self.components.log_prob(expanded)

    def log_prob(self, value):
        log_probs = self.component_log_probs(value) + self.log_weights
        result = torch.logsumexp(log_probs, -1)
        return result.expand(torch.broadcast_shapes(result.shape, self.batch_shape))

    def sample(self, sample_shape=()):
        shape = torch.Size(sample_shape) + self.batch_shape
        with torch.no_grad():
            index = torch.distributions.Categorical(logits=self.log_weights).sample(shape)
            draws = self.components.sample(shape)  # (*shape, K, d)
            gather = index.reshape(*shape, 1, *([1] * len(self.event_shape)))
            gather = gather.expand(*shape, 1, *self.event_shape)
            return draws.gather(len(shape), gather).squeeze(len(shape))

    @property
    def mean(self):
        weights = self.log_weights.exp().unsqueeze(-1)
        mean = (weights * self.components.mean).sum(-2)
        return mean.expand(self.batch_shape + self.event_shape)
