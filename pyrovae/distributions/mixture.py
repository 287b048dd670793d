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

from pyrovae.denormals import logsumexp
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


# floats in the (K, d, n) block multivariate_normal_log_probs projects for one chunk of
# values: n values with K d n <= this (at least one value). About 8 MB in float32: the
# memory a chunk takes (and keeps for the backward pass where autograd records)
PROJECTED_FLOATS = 2**21

# on the CPU the block of each chunk is computed CACHE_BLOCK_FLOATS at a time (k' d n <=
# this for k' of the K components, at least one), so the product, the subtraction, the
# squares and the sum read it from a core's cache, not from memory: at evaluation sizes
# (K = 500, d = 40, 104 values per chunk) one 8 MB block per chunk took 317 ms per 5,000
# values, 1 MB blocks of 50 components 173 ms (an exploratory timing, one thread).
# Elsewhere (CUDA) one block per chunk: each block costs a handful of kernel launches
CACHE_BLOCK_FLOATS = 2**18


def _components_per_block(k: int, d: int, n: int, device: torch.device) -> int:
    if device.type != "cpu":
        return k
    return max(1, min(k, CACHE_BLOCK_FLOATS // (d * n)))


def _fill_squared_distances(
    rows: torch.Tensor,
    shift: torch.Tensor,
    values: torch.Tensor,
    squared: torch.Tensor,
    residual: torch.Tensor | None = None,
) -> None:
    """Writes ``squared[k, i] = ||A_k v_i - c_k||^2`` (shape ``(K, n)``) block of components
    by block of components; and ``residual[k, :, i] = A_k v_i - c_k`` (``(K, d, n)``) where
    one is given, else the block is projected into one reused scratch block."""
    k, d, n = shift.shape[0], shift.shape[1], values.shape[0]
    block = _components_per_block(k, d, n, rows.device)
    scratch = rows.new_empty(min(block, k) * d, n)
    transposed = values.T
    for start in range(0, k, block):
        stop = min(start + block, k)
        size = (stop - start) * d
        if residual is None:
            part = torch.mm(rows[start * d : stop * d], transposed, out=scratch[:size])
            part = part.view(stop - start, d, n).sub_(shift[start:stop]).square_()
        else:
            target = residual[start:stop]
            torch.mm(rows[start * d : stop * d], transposed, out=target.view(size, n))
            target.sub_(shift[start:stop])
            part = torch.square(target, out=scratch[:size].view(stop - start, d, n))
        torch.sum(part, 1, out=squared[start:stop])


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

    Both ways run over blocks of components of at most :data:`CACHE_BLOCK_FLOATS` floats on
    the CPU. A custom operator rather than a ``torch.autograd.Function``: a recording of
    the loss (``fit``'s default) keeps it whole with this backward, where it inlined a
    Function's forward and let autograd record the three nodes (the recorded ``vamp+full``
    step of the Fashion-MNIST protocol was then 1.03 times the Python one, now 0.975:
    ``benchmarks/guide_families.py --prior vamp --protocol``). ``benchmarks/vamp_prior.py``
    times the VampPrior training path that uses it."""
    k, d, n = shift.shape[0], shift.shape[1], values.shape[0]
    squared = rows.new_empty(k, n)
    residual = rows.new_empty(k, d, n)
    _fill_squared_distances(rows, shift, values, squared, residual)
    return squared, residual


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
    need_rows, need_shift, need_values = ctx.needs_input_grad
    k, d, n = residual.shape
    grad_rows = torch.empty_like(rows) if need_rows else None
    grad_shift = residual.new_empty(k, d, 1) if need_shift else None
    grad_values = torch.zeros_like(values) if need_values else None
    block = _components_per_block(k, d, n, rows.device)
    for start in range(0, k, block):
        stop = min(start + block, k)
        grad_residual = residual[start:stop] * (2 * grad[start:stop]).unsqueeze(1)
        flat = grad_residual.view(-1, n)  # (k' d, n)
        if need_rows:
            torch.mm(flat, values, out=grad_rows[start * d : stop * d])
        if need_shift:
            torch.sum(grad_residual, -1, keepdim=True, out=grad_shift[start:stop])
        if need_values:
            grad_values.addmm_(flat.T, rows[start * d : stop * d])
    if need_shift:
        grad_shift.neg_()
    return grad_rows, grad_shift, grad_values


_squared_projected_distances.register_autograd(
    _squared_projected_distances_backward, setup_context=_save_residual
)


@torch.library.custom_op("pyrovae::lower_triangular_inverse", mutates_args=())
def _lower_triangular_inverse(scale_tril: torch.Tensor) -> torch.Tensor:
    """X = L^{-1} for a batch of lower-triangular L, shape ``(K, d, d)``, by a triangular
    solve against the identity; differentiable.

    The backward is dL = -tril(X^T dX X^T): two batched products where autograd's backward
    of the solve runs a second triangular solve, L^T G = dX, and a product. At K = 500,
    d = 40 on one CPU thread that solve was most of the backward's time (an exploratory
    timing: 18 ms forward and backward by autograd, 10 ms this way)."""
    d = scale_tril.shape[-1]
    eye = torch.eye(d, dtype=scale_tril.dtype, device=scale_tril.device)
    return torch.linalg.solve_triangular(scale_tril, eye.expand_as(scale_tril), upper=False)


@_lower_triangular_inverse.register_fake
def _(scale_tril):
    return torch.empty_like(scale_tril)


def _save_inverse(ctx, inputs, output):
    ctx.save_for_backward(output)


def _lower_triangular_inverse_backward(ctx, grad):
    (inverse,) = ctx.saved_tensors
    transposed = inverse.mT
    return (transposed @ grad @ transposed).tril_().neg_()


_lower_triangular_inverse.register_autograd(
    _lower_triangular_inverse_backward, setup_context=_save_inverse
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
    subtracted and squared in place where it records nothing (evaluation). On the CPU each
    chunk is computed in blocks of components that fit a core's cache
    (:data:`CACHE_BLOCK_FLOATS`).
    """
    k, d = loc.shape
    inverse = _lower_triangular_inverse(scale_tril)  # (K, d, d)
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
            squared = chunk.new_empty(k, chunk.shape[0])
            _fill_squared_distances(rows, shift, chunk, squared)
        parts.append(squared.T)  # (n, K)
    mahalanobis = torch.cat(parts) if parts else flat.new_empty(0, k)  # no values: (0, K)
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
        # most of a trained VampPrior's K terms underflow: their exp is slow on the CPU
        result = logsumexp(log_probs, -1)
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
