"""Checks a model/guide pair and its data before training, with errors that say the fix.

Pyro only warns when guide and model latent sites differ, and fails deep inside a trace on
a shape mismatch or a value outside a likelihood's support; these checks name the problem.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
import pyro.poutine as poutine
import torch

from pyrovae import supports
from pyrovae.data import DataSplits, check_splits
from pyrovae.errors import PyrovaeError

PROBE_ROWS = 8


def trace_pair(model: Callable, guide: Callable, x: torch.Tensor):
    """(guide trace, model trace replayed against it) on one batch ``x``."""
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    return guide_trace, model_trace


def sample_sites(trace) -> list[str]:
    """Names of the sample sites in a trace, observed or not (plates' ``_Subsample``
    bookkeeping sites excluded)."""
    return [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and type(site["fn"]).__name__ != "_Subsample"
    ]


def masked_log_prob(site) -> torch.Tensor:
    """A sample site's log density at its value, times its mask (Pyro's ``obs_mask`` and
    ``poutine.mask``); its scale is not applied."""
    log_prob = site["fn"].log_prob(site["value"])
    if site.get("mask") is not None and site["mask"] is not True:
        log_prob = log_prob * site["mask"]
    return log_prob


def latent_sites(trace) -> list[str]:
    """Names of the non-observed sample sites."""
    return [name for name in sample_sites(trace) if not trace.nodes[name]["is_observed"]]


def observed_sites(trace) -> list[str]:
    """Names of the observed sample sites."""
    return [name for name in sample_sites(trace) if trace.nodes[name]["is_observed"]]


def check_pair(model: Callable, guide: Callable, data: DataSplits) -> None:
    """Raise ``ValueError`` naming the problem and the fix if ``model``/``guide`` cannot
    train on ``data``: NaN/Inf/empty data, a feature count the model does not take, latent
    site names that differ between guide and model, a prior and a guide on different
    spaces (:func:`check_supports`), data outside the likelihood's support.
    """
    splits = ("train", "validation", "test")
    check_splits(data.name, {split: getattr(data, split) for split in splits})
    num_features = data.num_features
    _check_dtype(model, guide, data)
    expected = getattr(model, "data_dim", None)
    if expected is not None and expected != num_features:
        raise PyrovaeError(
            f"the model expects {expected} features per data point but {data.name} has "
            f"{num_features}; build the model with data_dim={num_features}"
        )
    probe = data.present_like_train(data.train[:PROBE_ROWS])  # draws only the probe rows
    try:
        with pyro.validation_enabled(False):
            guide_trace, model_trace = trace_pair(model, guide, probe)
    except (RuntimeError, ValueError) as error:
        raise PyrovaeError(
            f"running the guide and model on a batch of shape {tuple(probe.shape)} failed: "
            f"{error}. Check that the networks take {num_features} input features and that "
            "model and guide are on the data's device."
        ) from error

    guide_latents = set(latent_sites(guide_trace))
    # sites the model enumerates itself (config_enumerate) are summed out, not guided
    model_latents = {
        name
        for name in latent_sites(model_trace)
        if name in guide_latents or not model_trace.nodes[name]["infer"].get("enumerate")
    }
    if guide_latents != model_latents:
        raise PyrovaeError(
            "guide and model latent sites differ: "
            f"model has {sorted(model_latents)}, guide has {sorted(guide_latents)}"
            f" (missing from guide: {sorted(model_latents - guide_latents)}, "
            f"only in guide: {sorted(guide_latents - model_latents)}). "
            "Give every latent pyro.sample in the model a site of the same name in the guide."
        )
    check_supports(guide_trace, model_trace)
    if not observed_sites(model_trace):
        raise PyrovaeError(
            "the model has no observed site: pass the data with pyro.sample(..., obs=x)"
        )

    for name in observed_sites(model_trace):
        support = model_trace.nodes[name]["fn"].support
        for split in ("train", "validation", "test"):
            if getattr(data, split) is None:
                continue
            if split == "train" and data.binarize == "dynamic":
                # every Bernoulli draw of gray levels in [0, 1] (make_splits checked them)
                # is binary: a few rows show the support, a whole-set draw is wasted work
                values = data.present_like_train(data.train[:PROBE_ROWS])
            else:
                values = data.split(split)
            inside = support.check(values)
            if not bool(inside.all()):
                bad = (~inside).nonzero().flatten()
                hint = _support_hint(model)
                raise PyrovaeError(
                    f"{data.name} {split} split has {len(bad)} rows outside the support of the "
                    f"likelihood at site {name!r} ({support}; first rows {bad[:5].tolist()})."
                    f"{hint} Or change the likelihood (e.g. 'gaussian' or 'continuous-bernoulli')."
                )


def _check_dtype(model, guide, data: DataSplits) -> None:
    """The data's dtype must be the networks' (float32 unless the user converted them)."""
    dtypes = {
        p.dtype
        for owner in (model, guide)
        if isinstance(owner, torch.nn.Module)
        for p in owner.parameters()
    }
    if len(dtypes) == 1 and data.train.dtype not in dtypes:
        (wanted,) = dtypes
        cast = {torch.float32: "x.float()", torch.float64: "x.double()"}.get(wanted, "x.to(...)")
        raise PyrovaeError(
            f"{data.name} data has dtype {data.train.dtype} but the networks are {wanted}; "
            f"cast every split with {cast} (or convert the networks with .to({wanted}))"
        )


def check_supports(guide_trace, model_trace) -> None:
    """Raise ``ValueError`` if a latent site's prior and guide distributions live on
    different spaces (e.g. a vMF guide against a N(0, I) prior), naming the compatible
    priors and guide families."""
    for name in latent_sites(guide_trace):
        if name not in model_trace.nodes:
            continue
        prior = supports.support_name(model_trace.nodes[name]["fn"].support)
        guide = supports.support_name(guide_trace.nodes[name]["fn"].support)
        if prior != guide:
            raise PyrovaeError(supports.mismatch_message(name, prior, guide))


def _support_hint(model) -> str:
    likelihood = getattr(model, "likelihood", None)
    hint = getattr(likelihood, "support_hint", None)
    return f" It needs {hint}." if hint else ""
