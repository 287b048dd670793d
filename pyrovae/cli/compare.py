"""Train every compatible prior x guide pair on one decoder and budget, evaluate, report.

For each run (named after its guide, or ``prior+guide`` when several priors are compared):
parameters, seconds per epoch, test ELBO, test log p(x) (importance sampling,
--num-samples draws per image) with its standard error over test images, average KL =
I(x;z) + marginal KL (ELBO surgery), active units, PSIS k-hat median and fraction above
0.7, median importance ESS. Pairs whose prior and guide live on different spaces are
skipped and listed. Writes to --out: ``report.md``, ``results.json``, PNG figures, one
``datatree_<run>.nc`` (ArviZ DataTree) per run, and each run's checkpoint and history
under ``<run>/``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyro
import torch

from pyrovae import diagnostics, evaluate, supports
from pyrovae.data import labeled_subset
from pyrovae.diagnostics import plots
from pyrovae.errors import PyrovaeError
from pyrovae.report import format_table
from pyrovae.train import fit

from .spec import check_output_folder, save_json
from .train import config_from_args, spec_from_args

SHOWN = [
    "run",
    "outputs/point",
    "params",
    "s/epoch",
    "test ELBO",
    "test log p(x)",
    "+/- se",
    "avg KL",
    "I(x;z)",
    "marginal KL",
    "active units",
    "khat median",
    "share khat > threshold",
    "ESS median",
]


@dataclass
class Evaluation:
    """One trained pair on the test set: the report's columns and what the figures and the
    ranking need (per-image k-hat, ESS and log p(x); the DataTree)."""

    row: dict
    tree: object
    khat: np.ndarray
    ess: np.ndarray
    log_px: torch.Tensor


def evaluate_pair(model, guide, x: torch.Tensor, args: argparse.Namespace) -> Evaluation:
    """Evaluate one trained pair on test rows ``x``."""
    log_px = evaluate.log_likelihood(model, guide, x, args.num_samples)
    subset = x[: args.eval_points]
    surgery = evaluate.kl_decomposition(model, guide, subset, num_samples=10)
    tree = diagnostics.to_datatree(model, guide, subset, args.diag_samples)
    ratios = diagnostics.log_ratios(tree)
    khat, ess = diagnostics.psis_khat(ratios), diagnostics.importance_ess(ratios)
    row = {
        "test ELBO": evaluate.elbo(model, guide, x, num_samples=10).mean().item(),
        "test log p(x)": log_px.mean().item(),
        "+/- se": (log_px.std() / math.sqrt(len(log_px))).item(),
        "avg KL": surgery.avg_kl,
        "I(x;z)": surgery.mutual_info,
        "marginal KL": surgery.marginal_kl,
        "log N": surgery.log_n,
        "eval points": len(subset),
        "active units": evaluate.active_units(guide, x)["active"],
        **diagnostics.summarize(khat, ess, args.diag_samples),
        **evaluate.correlation_summary(evaluate.posterior_correlation(guide, subset)),
    }
    return Evaluation(row, tree, khat, ess, log_px)


def pair_grid(priors: list[str], guides: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """(every compatible (prior, guide) pair, one line per incompatible pair saying why).
    Refuses duplicates and a grid with no compatible pair before anything trains."""
    for what, names in (("priors", priors), ("guides", guides)):
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise PyrovaeError(f"--{what} lists {', '.join(repeated)} more than once")
    pairs, skipped = [], []
    for prior in priors:
        for guide in guides:
            own = supports.CATALOGUE["prior"][prior]
            family = supports.CATALOGUE["guide family"][guide]
            if supports.compatible(own, family):
                pairs.append((prior, guide))
            else:
                skipped.append(f"{prior} x {guide} (prior on {own}, guide on {family})")
    if not pairs:
        raise PyrovaeError("no compatible prior x guide pair in the grid: " + "; ".join(skipped))
    return pairs, skipped


def run_label(prior: str, guide: str, priors: list[str]) -> str:
    """The guide's name when one prior is compared, else ``prior+guide``."""
    return guide if len(priors) == 1 else f"{prior}+{guide}"


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    check_output_folder(out)
    config = config_from_args(args)
    config.validate()
    pairs, skipped = pair_grid(args.priors, args.guides)
    specs = {run_label(p, g, args.priors): spec_from_args(args, prior=p, guide=g) for p, g in pairs}
    for spec in specs.values():
        spec.validate()
    rows, results, curves, trained = [], {}, {}, {}
    data = next(iter(specs.values())).load_data()
    test = data.to(config.device).split("test")
    for label, spec in specs.items():
        pyro.set_rng_seed(args.seed)  # same model initialisation for every pair
        model, guide = spec.build(data.num_features)
        save_json({"spec": spec.to_dict(), "config": config.to_dict()}, out / label / "spec.json")
        labeled = None
        if spec.takes_labels:
            labeled = labeled_subset(data, spec.labels_per_class, config.seed)
        history = fit(
            model,
            guide,
            data,
            config,
            checkpoint=out / label / "checkpoint.pt",
            labeled=labeled,
            run_info=spec.to_dict(),
        )
        save_json(history.to_dict(), out / label / "history.json")
        row = {
            "run": label,
            "prior": spec.prior,
            "guide": spec.guide,
            "outputs/point": guide.head.outputs_per_datapoint,
            "params": evaluate.count_parameters(guide) + evaluate.count_parameters(model),
            "s/epoch": history.seconds_per_epoch,
            "KL path": history.kl_path,
        }
        results[label] = evaluate_pair(model, guide, test, args)
        row.update(results[label].row)
        rows.append(row)
        curves[label] = history.validation_elbo
        trained[label] = (model, guide)
        diagnostics.save_datatree(results[label].tree, out / f"datatree_{label}.nc")

    ranking = diagnostics.compare_guides(
        {n: r.log_px.cpu().numpy() for n, r in results.items()}, args.num_samples
    )[["rank", "elpd", "elpd_diff", "dse", "weight"]]
    figures = write_figures(out, data, test, results, curves, trained, ranking, args)
    paired = paired_to_first({n: r.log_px.cpu() for n, r in results.items()})
    save_json(
        {
            "rows": rows,
            "ranking": ranking.reset_index(names="run").to_dict("records"),
            # per test image, for paired comparisons of any two runs
            "test_log_px": {n: r.log_px.cpu().tolist() for n, r in results.items()},
            "paired_to_first": paired,
            "skipped": skipped,
            "settings": vars_for_json(args),
        },
        out / "results.json",
    )
    write_report(out / "report.md", rows, ranking, figures, args, data.name, skipped, paired)
    print(
        f"{data.name}: {len(rows)} runs, {args.epochs} epochs, {args.objective}; "
        f"nats per data point; test log p(x) from {args.num_samples} importance samples"
    )
    for line in skipped:
        print(f"skipped (incompatible supports): {line}")
    print(format_table(rows, SHOWN))
    print("ArviZ compare on summed test log p(x) (elpd_diff +/- dse, paired over images):")
    print(ranking.round(3).to_string())
    for line in paired_lines(paired):
        print(line)
    print(f"report, figures and DataTrees in {out}/")


def paired_to_first(log_px: dict[str, torch.Tensor]) -> list[dict]:
    """Each run's test log p(x) minus the first run's, image by image: the summed
    difference (nats over the test images) and its standard error sqrt(n) * sd(diff)."""
    names = list(log_px)
    first = log_px[names[0]]
    paired = []
    for name in names[1:]:
        mean, se = evaluate.paired_difference(log_px[name], first)
        n = len(first)
        paired.append(
            {"run": name, "baseline": names[0], "summed difference": n * mean, "se": n * se}
        )
    return paired


def paired_lines(paired: list[dict]) -> list[str]:
    if not paired:
        return []
    lines = [f"Paired to {paired[0]['baseline']} (test log p(x) summed over images, +/- se):"]
    for p in paired:
        lines.append(
            f"  {p['run']} - {p['baseline']}: {p['summed difference']:+.1f} +/- {p['se']:.1f}"
        )
    return lines


def write_figures(out: Path, data, test, results, curves, pairs, ranking, args) -> list[Path]:
    threshold = diagnostics.khat_threshold(args.diag_samples)
    khats = {n: r.khat for n, r in results.items()}
    ess = {n: r.ess for n, r in results.items()}
    figures = [
        plots.save(plots.plot_elpd_differences(ranking), out / "elpd_differences.png"),
        plots.save(plots.plot_khat(khats, threshold), out / "khat.png"),
        plots.save(plots.plot_ess(ess, args.diag_samples), out / "ess.png"),
        plots.save(
            plots.plot_khat_vs_ess(khats, ess, args.diag_samples, threshold),
            out / "khat_vs_ess.png",
        ),
        plots.save(plots.plot_elbo_curves(curves), out / "elbo_curves.png"),
    ]
    if data.image_shape is not None:
        x = test[:12]
        recon = {"data": x, **{n: evaluate.reconstruct(m, g, x) for n, (m, g) in pairs.items()}}
        figure = plots.plot_image_rows(
            recon, data.image_shape, "test images and each guide's reconstruction"
        )
        figures.append(plots.save(figure, out / "reconstructions.png"))
        first = next(iter(pairs))
        model, guide = pairs[first]
        samples = {
            source: evaluate.sample(model, guide, 12, test, source=source).mean
            for source in ("prior", "aggregate")
        }
        figure = plots.plot_image_rows(
            samples,
            data.image_shape,
            f"decoded samples ({first} guide): z from p(z) vs from the aggregated posterior",
        )
        figures.append(plots.save(figure, out / "samples.png"))
    return figures


def vars_for_json(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k != "run"}


def write_report(
    path: Path, rows, ranking, figures, args, dataset: str, skipped=(), paired=()
) -> None:
    lines = [
        f"# pyrovae compare: {dataset}",
        "",
        f"Same decoder and budget for every run: priors {', '.join(args.priors)}, likelihood "
        f"`{args.likelihood}`, d = {args.latent_dim}, hidden {list(args.hidden)}, "
        f"{args.epochs} epochs of `{args.objective}`, seed {args.seed}.",
        "All figures in nats per data point (higher log p(x) / ELBO is better).",
        f"test log p(x): importance sampling with {args.num_samples} draws from q(z|x) per "
        "image; +/- se is the standard error over test images.",
        f"KL decomposition, DataTree and PSIS on the first {rows[0]['eval points']} test "
        "images; "
        f"PSIS with {args.diag_samples} draws (reliable below k = "
        f"{diagnostics.khat_threshold(args.diag_samples):.2f}).",
        "",
        format_table(rows, SHOWN, markdown=True),
        "",
        f"How `{args.objective}` estimated each run's KL term: "
        + ", ".join(f"{r['run']}: {r['KL path']}" for r in rows),
        "",
        *(f"Skipped, incompatible supports: {line}" for line in skipped),
        "",
        "ArviZ `compare` on test log p(x) summed over test images (`dse` is the standard "
        "error of the paired difference to the best guide):",
        "",
        "```\n" + ranking.round(3).to_string() + "\n```",
        "",
        *paired_lines(list(paired)),
        "",
        "Posterior correlation found (mean |off-diagonal corr| of q(z|x)): "
        + ", ".join(f"{r['run']}: {r['mean_abs_corr']:.3f}" for r in rows),
        "",
    ]
    lines += [f"![{p.stem}]({p.name})" for p in figures]
    path.write_text("\n".join(lines) + "\n")
