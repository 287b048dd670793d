"""The published Fashion-MNIST protocol, per prior x guide, resumable in budgets of epochs.

Protocol (Tomczak & Welling, "VAE with a VampPrior", AISTATS 2018): 50,000 / 10,000 /
10,000 images, dynamic binarization, z = 40, gated dense encoder and decoder 2 x 300,
Adam lr 5e-4, batch 100, KL warm-up over 100 epochs, early stopping after 50 epochs
without a better validation ELBO, at most 2,000 epochs, test log p(x) by importance
sampling with S = 5,000. Every Gaussian scale, of the guide and of the HVAE's p(z1 | z2),
is kept in [0.05, e] (their log-variance in [-6, 2]) and every Bernoulli mean in [1e-5,
1 - 1e-5] (their ``log_Bernoulli``'s clamp): ``--bounds published``, the default.
``--bounds floor`` is the setting our first rows were trained with (README): the guide's
scale floored at 0.05 and nothing else bounded. VampPrior with 500 pseudo-inputs.
Published Fashion-MNIST test log p(x) on that protocol (Norouzi et al., "Exemplar VAE",
NeurIPS 2020, its density-estimation table): VAE -228.70, VampPrior -227.35, HVAE +
VampPrior -226.72 (nats per image).

Each pair trains in ``--out/<prior>+<guide>/`` and resumes from its own checkpoint, at most
``--epoch-budget`` more epochs per invocation, so a long run can be continued later. When
a pair has finished (early stop or 2,000 epochs), or with ``--evaluate``, its test log p(x)
is estimated with its best-validation parameters, in blocks of 100 images saved as they are
done (:func:`pyrovae.evaluate.resumable_log_likelihood`), so an interrupted evaluation
continues where it stopped on the next invocation. Results go to ``--out/results.json``
with the epochs done next to the published rows, and the peak resident memory of each
pair's training (measured in the call that trained it and carried over by calls that only
report or evaluate); the script prints a table, each evaluated pair's
test log p(x) minus the first evaluated pair's image by image over the test images both
evaluated (mean +/- se), the ratio of each pair's log p(x) to the published VAE's (1.0
= equal; below 1 is better, the figures being negative), and its difference from the
published row of its model and prior (positive is better). With several pairs it also
prints their best validation ELBO within the first E epochs for E = 100, 200, ... (equal
training budgets, from each checkpoint's history) and draws their validation curves to
``--out/validation_curves.png``.

``vamp+flow`` runs its flows in the ``"maf"`` direction (:mod:`guides.flows`): the
VampPrior scores each z under all 500 pseudo-input posteriors, which takes one pass of
each flow's network in that direction and d = 40 sequential passes, kept for backward, in
the default ``"iaf"`` one (that version was killed by the OOM killer at 24.3 GB in its
first epoch). Its first epoch on 2 CPU threads took 65.7 s at 1.3 GB peak RSS.

``--time-limit`` ends each pair's training at an epoch boundary and its test evaluation
at a saved block before that many seconds (a job's wall time: the next invocation
resumes both), and ``--jobs N`` trains up to N pairs at
once, each in its own process (a GPU has room for several of these small networks; each
pair's log goes to ``--out/<pair>/train.log``). A pair whose training diverges
(``TrainingDiverged``) is reported in its row and the exit status; the other pairs go on.

    python benchmarks/fashion_mnist.py --epoch-budget 20            # continue every pair
    python benchmarks/fashion_mnist.py --pairs standard+diagonal,vamp+full --evaluate
    python benchmarks/fashion_mnist.py --pairs hvae:vamp+diagonal     # the HVAE row
    python benchmarks/fashion_mnist.py --device cuda --jobs 4 --epoch-budget 2000 \
        --time-limit 1500 --pairs vamp+diagonal,vamp+full,vamp+flow,hvae:vamp+diagonal
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyro
import torch

from guides import build_guide, build_hierarchical_guide, family_options
from models import build_hvae, build_vae
from pyrovae import evaluate, fit, load_dataset
from pyrovae.errors import TrainingDiverged
from pyrovae.evaluate.resumable import read_progress
from pyrovae.train import load_checkpoint
from pyrovae.train.checkpoint import load_module_state
from pyrovae.train.loop import pair_summary

PUBLISHED = {"VAE": -228.70, "VampPrior": -227.35, "HVAE + VampPrior": -226.72}


def published_counterpart(label: str) -> str | None:
    """The published row a pair reproduces (any guide family on the same model and prior:
    a richer guide is to beat it), or None for a prior the table does not have."""
    prior = label.removeprefix("hvae:").split("+")[0]
    if label.startswith("hvae:"):
        return "HVAE + VampPrior" if prior == "vamp" else None
    return {"standard": "VAE", "vamp": "VampPrior"}.get(prior)


PROTOCOL = dict(
    # the ELBO; its KL term in closed form where one exists (standard prior), by one
    # draw log q - log p otherwise (VampPrior), as in the published code
    objective="TraceMeanField_ELBO",
    batch_size=100,
    learning_rate=5e-4,
    warmup_epochs=100,
    patience=50,
    progress=False,
    # a loss spike that fit's divergence guard catches (an epoch's loss above 10 times its
    # scale; the published code has no guard and takes the step) rolls the epoch back and
    # halves the learning rate rather than ending the run; each rollback is in the row
    on_nan="rollback",
)
# the published code's bounds (VampPrior repository: Hardtanh(-6, 2) on every
# log-variance, log_Bernoulli's clamp of the mean); "floor" keeps only the guide's floor
BOUNDS = ("published", "floor")
MIN_SCALE = 0.05  # exp(-6 / 2) = 0.0498
MAX_SCALE = math.e  # exp(2 / 2)
MIN_PROBABILITY = 1e-5
MAX_EPOCHS = 2000
DIVERGED_EXIT = 3  # a --row-only child whose pair diverged (its row.json says how)
HIDDEN = (300, 300)
LATENT_DIM = 40


def guide_scale_options(family: str, bounds: str) -> dict:
    """The guide family's scale options under ``bounds``: ``"published"`` keeps every
    scale it has in [0.05, e]; ``"floor"`` floors the diagonal, full and flow families'
    at 0.05 and sets nothing else (the setting of the rows trained before the ceiling)."""
    if bounds not in BOUNDS:
        raise ValueError(f"bounds must be one of {BOUNDS}, got {bounds!r}")
    names = {option.name for option in family_options(family)}
    if bounds == "floor":
        return {"min_scale": MIN_SCALE} if family in ("diagonal", "full", "flow") else {}
    options = {"min_scale": MIN_SCALE} if "min_scale" in names else {}
    if "max_scale" in names:
        options["max_scale"] = MAX_SCALE
    return options


def build_pair(label: str, data_dim: int, bounds: str = "published"):
    """The model and guide of a pair label ``prior+guide``, or ``hvae:prior+guide`` for the
    two-layer HVAE in the published layout (``HVAE_2level.py``): z1 and z2 of 40 each, the
    guide family on the top layer q(z2 | x); q(z1 | x, z2) and p(x | z1, z2) read each of
    their two inputs through a gated layer of 300 of its own, then a joint one of 600 ->
    300; p(z1 | z2) is gated 40 -> 300 -> 300. Under ``bounds="published"`` every scale is
    in [0.05, e] (a log-variance in [-6, 2]) and every Bernoulli mean in [1e-5, 1 - 1e-5];
    under ``"floor"`` the scales are floored at 0.05 and nothing else is bounded."""
    hierarchical = label.startswith("hvae:")
    prior, guide_family = label.removeprefix("hvae:").split("+")
    options = guide_scale_options(guide_family, bounds)
    published = bounds == "published"
    max_scale = MAX_SCALE if published else math.inf
    if guide_family == "flow" and prior == "vamp":
        # the VampPrior scores every z under its 500 components' flows: one pass each in
        # this direction, 40 sequential ones in the default "iaf" (guides.flows)
        options["direction"] = "maf"
    prior_options = {"num_pseudo_inputs": 500} if prior == "vamp" else {}
    model_options = {}
    if published:
        model_options["likelihood_options"] = {"min_probability": MIN_PROBABILITY}
    if hierarchical:
        guide = build_hierarchical_guide(
            data_dim,
            LATENT_DIM,
            guide_family,
            HIDDEN,
            "gated",
            bottom_min_scale=MIN_SCALE,
            bottom_max_scale=max_scale,
            bottom_branches=True,
            **options,
        )
        build_model = build_hvae
        model_options.update(
            conditional_min_scale=MIN_SCALE,
            conditional_max_scale=max_scale,
            decoder_branches=True,
        )
    else:
        guide = build_guide(data_dim, LATENT_DIM, guide_family, HIDDEN, "gated", **options)
        build_model = build_vae
    model = build_model(
        data_dim,
        LATENT_DIM,
        HIDDEN,
        prior,
        "bernoulli",
        "gated",
        prior_options=prior_options,
        posterior=guide.posterior,
        **model_options,
    )
    return model, guide


def bounds_of_checkpoint(saved, label: str, data_dim: int = 784) -> str | None:
    """The ``--bounds`` setting a checkpoint of pair ``label`` was trained with: the one
    whose pair prints as the checkpoint's (``fit`` stores each side's printed structure,
    where a bounded head shows its ``max_scale``); None where neither does."""
    for bounds in BOUNDS:
        if pair_summary(*build_pair(label, data_dim, bounds)) == saved.run.get("pair"):
            return bounds
    return None


def check_bounds(saved, label: str, bounds: str, path: Path, model, guide) -> None:
    """Refuse to continue or evaluate a checkpoint under other bounds than it was trained
    with (evaluating it would score its parameters under another model), naming the flag
    that fits it. ``model`` and ``guide``: the pair as built under ``bounds``."""
    if pair_summary(model, guide) == saved.run.get("pair"):
        return
    trained = bounds_of_checkpoint(saved, label)
    if trained != bounds:
        fits = f"pass --bounds {trained}" if trained else "it is not a pair of this script"
        raise SystemExit(
            f"{path} was trained with other bounds than --bounds {bounds}: {fits}, or use "
            "another --out for a run under these bounds"
        )


def pair_folder(label: str, args: argparse.Namespace) -> Path:
    """``--out/<pair>``: the pair's checkpoint, logs, row and test evaluation."""
    return Path(args.out) / label.replace(":", "-")


def reset_peak_rss() -> None:
    """Start this process's peak resident set afresh (Linux: writing 5 to
    ``/proc/self/clear_refs`` resets VmHWM), so that a pair trained after another in the
    same call is not charged with the other's peak. Where that is refused the peak stays
    the process's lifetime one: an upper bound."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """This process's peak resident set since :func:`reset_peak_rss` (MB): VmHWM from
    ``/proc/self/status``, or getrusage's lifetime peak where ``/proc`` is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


TRAINING_RSS = "peak RSS while training (MB)"


def training_peak_rss(trained_now: bool, folder: Path) -> int | None:
    """The peak resident memory of the pair's training (MB): measured now where this call
    trained it, else the figure its last training call wrote to ``row.json``; None where
    no call has measured it (rows written before this key existed recorded the process's
    peak even in calls that trained nothing: those figures are not carried over)."""
    if trained_now:
        return round(peak_rss_mb())
    previous = folder / "row.json"
    if previous.exists():
        return json.loads(previous.read_text()).get(TRAINING_RSS)
    return None


def _stopped_early(saved) -> bool:
    """Whether the checkpointed run has stopped early; from its early-stopping monitor too,
    since checkpoints written before the loop recorded the stop say it is still running."""
    bad_epochs = saved.monitors["early_stopping"]["bad_epochs"]
    return saved.history["stopped_early"] or bad_epochs >= PROTOCOL["patience"]


@torch.no_grad()
def largest_factor_condition(model, guide, images: torch.Tensor) -> float | None:
    """For a full-covariance guide, the largest 2-norm condition number of the posterior
    factor L (Sigma = L L^T) over ``images`` and, under a VampPrior, the K pseudo-inputs;
    None for other guides. The VampPrior scores each z with L_k^-1 (by a triangular solve),
    whose float32 error grows with that number: about 1e-7 times it, relative."""
    inputs = [images]
    if hasattr(model.prior, "pseudo_inputs"):
        inputs.append(model.prior.pseudo_inputs)
    largest = None
    for x in inputs:
        q = guide.posterior(x)
        if not isinstance(q, torch.distributions.MultivariateNormal):
            return None
        condition = torch.linalg.cond(q.scale_tril.double()).max().item()
        largest = condition if largest is None else max(largest, condition)
    return largest


def train_pair(label: str, data, args) -> dict:
    began = time.perf_counter()
    folder = pair_folder(label, args)
    checkpoint = folder / "checkpoint.pt"
    pyro.set_rng_seed(args.seed)
    model, guide = build_pair(label, data.num_features, args.bounds)
    done, stopped = 0, False
    if checkpoint.exists():
        saved = load_checkpoint(checkpoint)
        check_bounds(saved, label, args.bounds, checkpoint, model, guide)
        done, stopped = saved.epoch, _stopped_early(saved)
    finished = stopped or done >= MAX_EPOCHS
    trained_now = not finished and args.epoch_budget > 0
    if trained_now:
        reset_peak_rss()
        target = min(done + args.epoch_budget, MAX_EPOCHS)
        history = fit(
            model,
            guide,
            data,
            epochs=target,
            seed=args.seed,
            device=args.device,
            checkpoint=checkpoint,
            resume=checkpoint if checkpoint.exists() else None,
            time_limit=args.time_limit,
            **PROTOCOL,
        )
        done, stopped = history.epoch[-1], history.stopped_early
        finished = stopped or done >= MAX_EPOCHS
    training_rss = training_peak_rss(trained_now, folder)
    saved = load_checkpoint(checkpoint)
    best = saved.monitors["early_stopping"]["best_state"]
    row = {
        "pair": label,
        "bounds": args.bounds,
        "epochs": done,
        "finished": finished,
        "best epoch": saved.monitors["early_stopping"]["best_epoch"],
        "validation ELBO": saved.history["validation_elbo"][-1],
        # early stopping's best (None while the warm-up lasts: it starts at beta = 1)
        "best validation ELBO": saved.monitors["early_stopping"]["best_value"]
        if saved.monitors["early_stopping"]["best_epoch"] is not None
        else None,
        "seconds per epoch": sum(saved.history["seconds"]) / max(len(saved.history["seconds"]), 1),
        TRAINING_RSS: training_rss,
        # the ELBO at beta = 1 after every epoch, warm-up included (fit's validation)
        "validation ELBO per epoch": [round(v, 4) for v in saved.history["validation_elbo"]],
        # epochs rolled back on a loss spike, each with its reason and the halved rate
        "rollbacks": saved.history.get("rollbacks", []),
    }
    if finished or args.evaluate:
        source = best if best is not None else {"model": saved.model, "guide": saved.guide}
        model.to("cpu"), guide.to("cpu")
        load_module_state(model, source["model"])
        load_module_state(guide, source["guide"])
        model.to(args.device), guide.to(args.device)
        test = data.test[: args.test_points].to(args.device)
        condition = largest_factor_condition(model, guide, test[:1000])
        if condition is not None:
            row["largest condition number of L"] = condition
        # saved every 100 images and continued by the next invocation: on one CPU thread a
        # VampPrior's 10,000 images take hours (the file is refused if the parameters,
        # images or S differ from those it was written for)
        epoch = row["best epoch"] if best is not None else done
        progress = folder / f"test_log_px_epoch{epoch}_{len(test)}_S{args.num_samples}.pt"
        left = None  # the rest of this pair's --time-limit; one block always runs
        if args.time_limit is not None:
            left = max(args.time_limit - (time.perf_counter() - began), 1e-3)
        log_px = evaluate.resumable_log_likelihood(
            model, guide, test, progress, num_samples=args.num_samples, time_limit=left
        )
        row["S"] = args.num_samples
        if len(log_px) < len(test):  # stopped by the time limit: the next call continues
            row["test points done"] = len(log_px)
        else:
            row["test log p(x)"] = log_px.mean().item()
            row["+/- se"] = (log_px.std() / math.sqrt(len(log_px))).item()
            row["test points"] = len(log_px)
            row["per-image values"] = str(progress.resolve())
    (folder / "row.json").write_text(json.dumps(row, indent=2))
    return row


def train_pair_or_report(label: str, data, args) -> dict:
    """:func:`train_pair`, or, where the pair diverges, a row saying so (also in
    ``row.json``), so that one pair's divergence does not end the others' runs. Its
    checkpoint holds the last good epoch (``fit`` checkpoints nothing non-finite)."""
    try:
        return train_pair(label, data, args)
    except TrainingDiverged as error:
        logging.error("%s diverged: %s", label, error)
        row = {"pair": label, "diverged": str(error)}
        folder = pair_folder(label, args)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "row.json").write_text(json.dumps(row, indent=2))
        return row


def paired_differences(rows: list[dict]) -> list[tuple[str, str, int, float, float]]:
    """``(pair, reference, n, mean, se)`` for each evaluated pair after the first: its test
    log p(x) minus the first evaluated pair's, image by image over the first n test images
    both evaluated (the same images, binarized once), mean and standard error over those
    images (nats per image). Pairing removes the images' own spread, the larger part of
    each row's standard error."""
    evaluated = [row for row in rows if "per-image values" in row]
    values = {
        row["pair"]: read_progress(row["per-image values"])["values"].double() for row in evaluated
    }
    out = []
    for row in evaluated[1:]:
        reference = evaluated[0]["pair"]
        n = min(len(values[row["pair"]]), len(values[reference]))
        difference = values[row["pair"]][:n] - values[reference][:n]
        se = (difference.std() / math.sqrt(n)).item() if n > 1 else float("nan")
        out.append((row["pair"], reference, n, difference.mean().item(), se))
    return out


def best_by_epoch(rows: list[dict], step: int = 100) -> tuple[list[str], list[tuple]]:
    """Equal training budgets: ``(pairs, table)`` where each table row is ``(E, best_1,
    ..., best_P)``, best_p the highest validation ELBO pair p reached in its first E epochs
    (nats per image), for E = step, 2 step, ... up to the shortest run, and its last epoch
    where that is not a multiple of ``step``. Pairs without a curve (diverged, or rows
    written before curves were kept) are left out. One pair gives its own table, to set
    beside figures recorded from another run."""
    curves = {
        row["pair"]: row["validation ELBO per epoch"]
        for row in rows
        if row.get("validation ELBO per epoch")
    }
    if not curves:
        return [], []
    shortest = min(len(curve) for curve in curves.values())
    epochs = list(range(step, shortest + 1, step))
    if not epochs or epochs[-1] != shortest:
        epochs.append(shortest)
    table = [(e, *(max(curve[:e]) for curve in curves.values())) for e in epochs]
    return list(curves), table


def plot_validation_curves(rows: list[dict], path: Path, first_epoch: int) -> Path | None:
    """Each pair's validation ELBO per epoch from ``first_epoch`` on (the warm-up's first
    epochs sit tens of nats lower and would flatten the rest), as a PNG at ``path``; None
    where no curve reaches ``first_epoch``."""
    curves = {
        row["pair"]: row["validation ELBO per epoch"][first_epoch - 1 :]
        for row in rows
        if len(row.get("validation ELBO per epoch") or []) >= first_epoch
    }
    if not curves:
        return None
    from pyrovae.diagnostics import plots  # matplotlib: only where a figure is drawn

    return plots.save(plots.plot_elbo_curves(curves, first_epoch=first_epoch), path)


def child_command(label: str, args: argparse.Namespace) -> list[str]:
    """This script's command line for one pair, with this invocation's settings."""
    command = [sys.executable, str(Path(__file__).resolve()), "--pairs", label, "--row-only"]
    for flag in (
        "epoch_budget",
        "test_points",
        "num_samples",
        "device",
        "threads",
        "seed",
        "bounds",
    ):
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    command += ["--out", str(Path(args.out).resolve())]
    for flag in ("train_size", "time_limit"):
        if getattr(args, flag) is not None:
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return command + (["--evaluate"] if args.evaluate else [])


def train_pairs_in_parallel(args: argparse.Namespace) -> list[dict]:
    """Each pair in its own process, at most ``args.jobs`` at once; their rows in the
    order of ``args.pairs``. A pair that fails is reported with its log's last lines."""

    def run(label: str) -> dict:
        folder = pair_folder(label, args)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "train.log", "a") as log:
            done = subprocess.run(child_command(label, args), stdout=log, stderr=log, check=False)
        row_file = folder / "row.json"
        if done.returncode == DIVERGED_EXIT:  # its row says how
            return json.loads(row_file.read_text())
        if done.returncode != 0:
            tail = (folder / "train.log").read_text().splitlines()[-5:]
            raise SystemExit(f"{label} failed (exit {done.returncode}): " + " | ".join(tail))
        return json.loads(row_file.read_text())

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        return list(pool.map(run, args.pairs))


def main(args: argparse.Namespace) -> float:
    torch.set_num_threads(args.threads)
    # one line per epoch (fit's INFO log), so a run of hours in the background shows progress
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    if args.jobs > 1 and len(args.pairs) > 1:
        rows = train_pairs_in_parallel(args)
    else:
        data = load_dataset("fashion-mnist", binarize="dynamic")
        if args.train_size is not None:  # smoke tests only: the protocol trains on all 50,000
            data.train = data.train[: args.train_size]
        rows = [train_pair_or_report(label, data, args) for label in args.pairs]
    if args.row_only:  # one pair of a parallel invocation: the parent writes the summary
        if rows[0].get("diverged"):
            raise SystemExit(DIVERGED_EXIT)
        return float("nan")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps(
            {"protocol": PROTOCOL, "bounds": args.bounds, "published": PUBLISHED, "rows": rows},
            indent=2,
        )
    )
    print(
        "Fashion-MNIST, published protocol; published "
        + ", ".join(f"{name} {value}" for name, value in PUBLISHED.items())
        + " (test log p(x), nats per image)"
    )
    ratio = float("nan")
    for row in rows:
        if row.get("diverged"):
            print(f"  {row['pair']:22s} DIVERGED: {row['diverged']}")
            continue
        figure = row.get("test log p(x)")
        shown = f"{figure:.2f} +/- {row['+/- se']:.2f}" if figure is not None else "not evaluated"
        if "test points done" in row:
            shown = f"{row['test points done']} of {args.test_points} images evaluated so far"
        best = ""
        if row["best validation ELBO"] is not None:
            best = f" (best {row['best validation ELBO']:.2f} at epoch {row['best epoch']})"
        print(
            f"  {row['pair']:22s} epochs {row['epochs']:4d} "
            f"({'finished' if row['finished'] else 'in progress'}), "
            f"validation ELBO {row['validation ELBO']:.2f}{best}, test log p(x) {shown}"
        )
        rss = row.get(TRAINING_RSS)
        rss = f"{rss} MB" if rss is not None else "not measured (no training call recorded it)"
        print(
            f"    {row['seconds per epoch']:.1f} s per training epoch; peak RSS while "
            f"training {rss}"
        )
        for rollback in row.get("rollbacks", []):
            print(
                f"    rolled back epoch {rollback['epoch']} (learning rate now "
                f"{rollback['learning_rate']:g}): {rollback['reason']}"
            )
        if "largest condition number of L" in row:
            print(f"    largest condition number of L: {row['largest condition number of L']:.3g}")
        if figure is not None:
            ratio = figure / PUBLISHED["VAE"]
            print(f"    ratio to the published VAE: {ratio:.4f}")
            counterpart = published_counterpart(row["pair"])
            if counterpart is not None:
                print(
                    f"    minus the published {counterpart} row ({PUBLISHED[counterpart]}): "
                    f"{figure - PUBLISHED[counterpart]:+.2f} nats per image"
                )
    for pair, reference, n, mean, se in paired_differences(rows):
        print(
            f"  {pair} - {reference}, paired over the first {n} test images: "
            f"{mean:+.3f} +/- {se:.3f}"
        )
    pairs, table = best_by_epoch(rows)
    if table:
        print("  best validation ELBO within the first E epochs (equal budgets, nats per image):")
        print("    " + f"{'E':>5s}" + "".join(f"  {pair:>20s}" for pair in pairs))
        for epoch, *best in table:
            print("    " + f"{epoch:5d}" + "".join(f"  {value:20.2f}" for value in best))
    figure_path = plot_validation_curves(rows, out / "validation_curves.png", first_epoch=50)
    if figure_path is not None:
        print(f"  validation curves: {figure_path}")
    print(f"  ratio of the last evaluated pair to the published VAE: {ratio:.4f}")
    diverged = [row["pair"] for row in rows if row.get("diverged")]
    if diverged:
        raise SystemExit(f"diverged: {', '.join(diverged)} (the other pairs' rows are above)")
    return ratio


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--pairs",
        type=lambda s: s.split(","),
        default=["standard+diagonal", "vamp+diagonal", "vamp+full"],
        help="comma-separated prior+guide pairs; hvae:prior+guide for the two-layer HVAE",
    )
    parser.add_argument("--epoch-budget", type=int, default=10, help="more epochs per pair now")
    parser.add_argument("--evaluate", action="store_true", help="evaluate unfinished pairs too")
    parser.add_argument("--test-points", type=int, default=10_000, help="test images")
    parser.add_argument("--num-samples", type=int, default=5000, help="S for log p(x)")
    parser.add_argument(
        "--train-size", type=int, default=None, help="fewer training images (smoke tests only)"
    )
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="seed")
    parser.add_argument(
        "--bounds",
        choices=BOUNDS,
        default="published",
        help="published: every scale in [0.05, e] and every Bernoulli mean in [1e-5, 1 - "
        "1e-5], as the published code; floor: only the guide's scale floored at 0.05 (the "
        "setting of the rows trained before 2026-11-24)",
    )
    parser.add_argument("--out", default="runs/fashion_mnist", help="output folder")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="seconds per pair in this invocation: training ends at an epoch boundary, the "
        "test evaluation after a saved block of 100 images",
    )
    parser.add_argument("--jobs", type=int, default=1, help="pairs trained at once")
    parser.add_argument(
        "--row-only", action="store_true", help="write only the pair's row.json (for --jobs)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
