"""Train one model/guide pair, print its ELBO per split, save checkpoint and history.

Writes to --out: ``checkpoint.pt`` (resumable with --resume), ``history.json`` (per-epoch
validation ELBO, seconds), ``spec.json`` (what was built) and ``results.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyro
import torch

from pyrovae.data import labeled_subset
from pyrovae.evaluate import (
    correlation_summary,
    count_parameters,
    estimate_elbo,
    posterior_correlation,
)
from pyrovae.report import format_table
from pyrovae.train import FitConfig, fit

from .flags import chosen_options
from .spec import RunSpec, check_output_folder, save_json


def spec_from_args(
    args: argparse.Namespace, prior: str | None = None, guide: str | None = None
) -> RunSpec:
    """The RunSpec of one pair; ``prior``/``guide`` override ``--prior``/``--guide``
    (compare passes each pair of its grid). Options come from the generated flags."""
    prior = prior or args.prior
    guide = guide or args.guide
    priors = getattr(args, "priors", None) or [prior]
    guides = getattr(args, "guides", None) or [guide]
    return RunSpec(
        dataset=args.dataset,
        binarize=args.binarize,
        data_dir=args.data_dir,
        data_path=args.data_path,
        num_validation=args.num_validation,
        model=args.model,
        guide=guide,
        prior=prior,
        likelihood=args.likelihood,
        latent_dim=args.latent_dim,
        hidden=args.hidden,
        activation=args.activation,
        prior_options=chosen_options(args, "prior", priors)[prior],
        guide_options=chosen_options(args, "guide", guides)[guide],
        model_options=chosen_options(args, "model", [args.model])[args.model],
        labels_per_class=args.labels_per_class,
    )


def config_from_args(args: argparse.Namespace) -> FitConfig:
    return FitConfig(
        objective=args.objective,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        num_particles=args.num_particles,
        warmup_epochs=args.warmup_epochs,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        on_nan=args.on_nan,
        distributed=getattr(args, "distributed", False),
        jit={"on": True, "off": False}.get(args.jit, args.jit),
        time_limit=getattr(args, "time_limit", None),
    )


def train_one(
    spec: RunSpec,
    config: FitConfig,
    out: Path,
    resume: str | None = None,
    override: tuple[str, ...] = (),
) -> dict:
    """Build, train and summarise one pair; return its results row."""
    spec.validate()
    config.validate()
    check_output_folder(out)
    data = spec.load_data()
    pyro.set_rng_seed(config.seed)  # before the networks are built: one seed, one result
    model, guide = spec.build(data.num_features)
    save_json({"spec": spec.to_dict(), "config": config.to_dict()}, out / "spec.json")
    labeled = (
        labeled_subset(data, spec.labels_per_class, config.seed) if spec.takes_labels else None
    )
    history = fit(
        model,
        guide,
        data,
        config,
        checkpoint=out / "checkpoint.pt",
        resume=resume,
        labeled=labeled,
        run_info=spec.to_dict(),
        override=override,
    )
    if config.distributed and torch.distributed.get_rank() != 0:
        return {}  # process 0 evaluates and writes the results
    save_json(history.to_dict(), out / "history.json")
    splits = data.to(config.device)
    row = {
        "model": spec.model,
        "prior": spec.prior,
        "guide": spec.guide,
        "outputs/point": guide.head.outputs_per_datapoint,
        "guide params": count_parameters(guide),
        "model params": count_parameters(model),
        "KL": history.kl_path,
        "epochs": history.epoch[-1] if history.epoch else 0,
        "s/epoch": history.seconds_per_epoch,
    }
    if config.time_limit is not None:
        row["time-limited"] = history.time_limited
    for split in ("train", "validation", "test"):
        if getattr(splits, split) is not None:
            row[f"{split} ELBO"] = estimate_elbo(
                model, guide, splits.presented(split), config.objective
            )
    row.update(correlation_summary(posterior_correlation(guide, splits.split("test"))))
    if spec.takes_labels and data.labels is not None:
        predicted = guide.posterior(splits.split("test")).probs.argmax(-1)
        row["test accuracy"] = (predicted == splits.labels["test"]).float().mean().item()
    save_json(row, out / "results.json")
    return row


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    row = train_one(
        spec_from_args(args), config_from_args(args), out, args.resume, tuple(args.override or ())
    )
    if not row:  # a distributed process other than 0
        return
    print(
        f"ELBO in nats per data point ({args.dataset}, {args.objective}, "
        f"{row['epochs']} of {args.epochs} epochs); outputs in {out}/"
    )
    print(format_table([row]))
    if row.get("time-limited"):
        print(
            f"stopped at the time limit ({args.time_limit:g} s) after epoch {row['epochs']}; "
            f"continue with: --resume {out / 'checkpoint.pt'}"
        )
