import json
import math
import subprocess
import sys

import pytest
import torch

from pyrovae.cli import main


def test_train_runs_end_to_end_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--dataset",
            "digits",
            "--guide",
            "diagonal",
            "--prior",
            "standard",
            "--likelihood",
            "bernoulli",
            "--objective",
            "TraceMeanField_ELBO",
            "--latent-dim",
            "4",
            "--hidden",
            "64",
            "--epochs",
            "3",
            "--device",
            "cpu",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    for column in ("train ELBO", "validation ELBO", "test ELBO", "guide params"):
        assert column in printed
    assert {p.name for p in out.iterdir()} >= {
        "checkpoint.pt",
        "history.json",
        "spec.json",
        "results.json",
    }
    history = json.loads((out / "history.json").read_text())
    assert len(history["validation_elbo"]) == 3
    results = json.loads((out / "results.json").read_text())
    # A decoder predicting 0.5 for every pixel scores 64 log 0.5 = -44.4 nats; three epochs
    # measured -34.4. A run that learned nothing fails this.
    assert 64 * math.log(0.5) + 5 < results["test ELBO"] < 0
    assert history["validation_elbo"][-1] > history["validation_elbo"][0]

    # --resume continues the same run to more epochs, with the same settings ...
    code = main(
        [
            "train",
            "--objective",
            "TraceMeanField_ELBO",
            "--latent-dim",
            "4",
            "--hidden",
            "64",
            "--epochs",
            "5",
            "--no-progress",
            "--out",
            str(out),
            "--resume",
            str(out / "checkpoint.pt"),
        ]
    )
    assert code == 0
    assert json.loads((out / "history.json").read_text())["epoch"] == [1, 2, 3, 4, 5]
    capsys.readouterr()

    # ... and refuses other settings by name unless --override says they change on purpose.
    again = ["train", "--objective", "TraceMeanField_ELBO", "--latent-dim", "4", "--hidden", "64"]
    again += ["--epochs", "6", "--no-progress", "--out", str(out)]
    again += ["--resume", str(out / "checkpoint.pt"), "--lr", "0.01"]
    assert main(again) == 2
    assert "learning_rate: 0.001 in the checkpoint, 0.01 now" in capsys.readouterr().err
    assert main([*again, "--override", "lr"]) == 0
    assert json.loads((out / "history.json").read_text())["learning_rate"][-1] == 0.01


def test_train_stops_at_the_time_limit_and_says_how_to_go_on(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--epochs", "3", "--latent-dim", "3", "--hidden", "32", "--no-progress"]
    assert main([*argv, "--out", str(out), "--time-limit", "0.001"]) == 0
    printed = capsys.readouterr().out
    assert "1 of 3 epochs" in printed
    assert f"continue with: --resume {out / 'checkpoint.pt'}" in printed
    assert main([*argv, "--out", str(out), "--resume", str(out / "checkpoint.pt")]) == 0
    assert json.loads((out / "history.json").read_text())["epoch"] == [1, 2, 3]


def test_unknown_names_list_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--guide", "diagonl"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown guide family 'diagonl' (did you mean 'diagonal'?)" in err
    assert "full" in err and "vmf" in err


def test_library_errors_exit_nonzero_without_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyrovae.cli",
            "train",
            "--binarize",
            "none",
            "--epochs",
            "1",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "outside the support" in result.stderr


@pytest.mark.parametrize("command", ["train", "compare", "registry"])
def test_help_shows_defaults_in_plain_text(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    printed = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    assert "``" not in printed and ":class:" not in printed and ":mod:" not in printed
    if command != "registry":
        assert "(default: 50)" in printed  # --epochs
        assert "(default: digits)" in printed
        assert "(default: None)" not in printed


def test_help_lists_what_exists(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    printed = capsys.readouterr().out
    for name in (
        "train",
        "digits",
        "fashion-mnist",
        "diagonal",
        "standard",
        "bernoulli",
        "TraceMeanField_ELBO",
    ):
        assert name in printed


def test_compare_writes_every_promised_file(tmp_path, capsys):
    import arviz_base

    out = tmp_path / "cmp"
    code = main(
        [
            "compare",
            "--dataset",
            "digits",
            "--guides",
            "diagonal,full,mixture",
            "--epochs",
            "2",
            "--latent-dim",
            "3",
            "--hidden",
            "32",
            "--num-samples",
            "200",
            "--diag-samples",
            "100",
            "--eval-points",
            "40",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    for column in ("test log p(x)", "I(x;z)", "marginal KL", "khat median", "ESS median"):
        assert column in printed
    expected = {
        "report.md",
        "results.json",
        "khat.png",
        "ess.png",
        "khat_vs_ess.png",
        "elpd_differences.png",
        "elbo_curves.png",
        "reconstructions.png",
        "samples.png",
    }
    expected |= {f"datatree_{g}.nc" for g in ("diagonal", "full", "mixture")}
    assert expected <= {p.name for p in out.iterdir()}
    for guide in ("diagonal", "full", "mixture"):
        assert (out / guide / "checkpoint.pt").exists()
        tree = arviz_base.convert_to_datatree(str(out / f"datatree_{guide}.nc"))
        assert tree["posterior"]["z"].shape == (1, 100, 40, 3)
    rows = json.loads((out / "results.json").read_text())["rows"]
    for row in rows:
        assert row["test log p(x)"] >= row["test ELBO"] - 0.5
        assert row["avg KL"] == pytest.approx(row["I(x;z)"] + row["marginal KL"])
    report = (out / "report.md").read_text()
    assert "| mixture" in report and "![khat](khat.png)" in report
    # each run paired to the first, image by image, from the per-image values it saved
    saved = json.loads((out / "results.json").read_text())
    log_px = {k: torch.tensor(v, dtype=torch.float64) for k, v in saved["test_log_px"].items()}
    diff = log_px["full"] - log_px["diagonal"]
    full = next(p for p in saved["paired_to_first"] if p["run"] == "full")
    assert full["summed difference"] == pytest.approx(diff.sum().item(), abs=1e-3)
    assert full["se"] == pytest.approx(diff.std().item() * len(diff) ** 0.5, rel=1e-3)
    assert "Paired to diagonal" in printed and "full - diagonal:" in report


def test_compare_rejects_unknown_guides(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--guides", "diagonal,banana"])
    assert "banana" in capsys.readouterr().err


# ------------------------------------------------ priors, geometries and generated flags

SMALL = ["--epochs", "2", "--latent-dim", "3", "--hidden", "32", "--no-progress"]


@pytest.mark.parametrize(
    "prior, guide",
    [
        ("vamp", "diagonal"),
        ("sphere", "vmf"),
        ("sphere", "power-spherical"),
        ("dirichlet", "dirichlet"),
    ],
)
def test_train_swaps_the_prior_and_the_latent_geometry(prior, guide, tmp_path, capsys):
    out = tmp_path / "run"
    extra = ["--prior-vamp-num-pseudo-inputs", "20"] if prior == "vamp" else []
    code = main(["train", "--prior", prior, "--guide", guide, *SMALL, *extra, "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert (results["prior"], results["guide"]) == (prior, guide)
    assert -64 < results["test ELBO"] < 0


def test_generated_flags_reach_the_builders(tmp_path):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--prior",
            "mog",
            "--prior-mog-num-components",
            "3",
            "--guide",
            "lowrank",
            "--guide-lowrank-rank",
            "1",
            *SMALL,
            "--out",
            str(out),
        ]
    )
    assert code == 0
    spec = json.loads((out / "spec.json").read_text())["spec"]
    assert spec["prior_options"] == {"num_components": 3}
    assert spec["guide_options"] == {"rank": 1}
    results = json.loads((out / "results.json").read_text())
    assert results["outputs/point"] == 3 * (1 + 2)  # d (rank + 2)


def test_mismatched_prior_and_guide_exit_2_listing_the_partners(capsys):
    code = main(["train", "--prior", "standard", "--guide", "vmf", *SMALL])
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot be paired" in err and "Priors for a guide on sphere: sphere, vamp" in err


def test_an_option_for_an_unused_prior_is_refused(capsys):
    code = main(["train", "--prior", "standard", "--prior-mog-num-components", "4", *SMALL])
    assert code == 2
    assert "--prior-mog-num-components" in capsys.readouterr().err


def test_compare_trains_the_compatible_grid_and_lists_the_rest(tmp_path, capsys):
    out = tmp_path / "grid"
    code = main(
        [
            "compare",
            "--priors",
            "standard,sphere",
            "--guides",
            "diagonal,vmf",
            *SMALL,
            "--num-samples",
            "50",
            "--diag-samples",
            "50",
            "--eval-points",
            "30",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "skipped (incompatible supports): standard x vmf" in printed
    results = json.loads((out / "results.json").read_text())
    assert [r["run"] for r in results["rows"]] == ["standard+diagonal", "sphere+vmf"]
    assert {r["run"] for r in results["ranking"]} == {"standard+diagonal", "sphere+vmf"}
    assert (out / "datatree_sphere+vmf.nc").exists()


def test_compare_refuses_repeated_names_before_training(capsys):
    code = main(["compare", "--guides", "diagonal,diagonal", *SMALL])
    assert code == 2
    assert "more than once" in capsys.readouterr().err


def test_readme_registry_tables_are_current():
    from pathlib import Path

    from pyrovae.cli.tables import registry_tables

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert registry_tables() in readme, "README is stale: paste the output of `pyrovae registry`"


def test_train_a_hierarchical_model_with_a_vamp_prior_on_top(tmp_path, capsys):
    out = tmp_path / "hvae"
    code = main(
        [
            "train",
            "--model",
            "hvae",
            "--model-hvae-bottom-dim",
            "2",
            "--prior",
            "vamp",
            "--prior-vamp-num-pseudo-inputs",
            "10",
            *SMALL,
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == "hvae" and -64 < results["test ELBO"] < 0
    spec = json.loads((out / "spec.json").read_text())["spec"]
    assert spec["model_options"] == {"bottom_dim": 2}


def test_the_same_seed_twice_gives_identical_results_across_processes(tmp_path):
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / run
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pyrovae.cli",
                "train",
                *SMALL,
                "--seed",
                "3",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        outputs.append(json.loads((out / "results.json").read_text()))
    keys = ("train ELBO", "validation ELBO", "test ELBO")
    assert [outputs[0][k] for k in keys] == [outputs[1][k] for k in keys]


def test_an_unexpected_failure_is_one_line_and_verbose_shows_the_traceback(
    tmp_path, capsys, monkeypatch
):
    import pyrovae.cli.train as train_command

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access\nsecond line")

    monkeypatch.setattr(train_command, "fit", broken)
    argv = ["train", *SMALL, "--out", str(tmp_path / "out")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        "pyrovae train: error: RuntimeError: CUDA error: an illegal memory access "
        "(run with --verbose for the traceback)"
    )
    assert main(["--verbose", *argv]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_compare_works_with_one_guide(tmp_path):
    out = tmp_path / "one"
    args = ["compare", "--guides", "diagonal", *SMALL, "--num-samples", "30"]
    code = main([*args, "--diag-samples", "30", "--eval-points", "20", "--out", str(out)])
    assert code == 0
    assert (out / "report.md").exists() and (out / "khat_vs_ess.png").exists()


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--diag-samples", "1", "must be >= 25"),
        ("--num-samples", "0", "must be >= 1"),
        ("--eval-points", "x", "expected an integer"),
    ],
)
def test_compare_refuses_bad_sample_counts_before_training(flag, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", flag, value])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_compare_runs_on_the_hierarchical_model(tmp_path):
    out = tmp_path / "hcompare"
    code = main(
        [
            "compare",
            "--model",
            "hvae",
            "--priors",
            "standard,vamp",
            "--guides",
            "diagonal",
            "--prior-vamp-num-pseudo-inputs",
            "10",
            *SMALL,
            *("--num-samples", "30", "--diag-samples", "30", "--eval-points", "20"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["run"] for r in rows] == ["standard+diagonal", "vamp+diagonal"]
    assert (out / "datatree_vamp+diagonal.nc").exists()


def test_jit_trains_the_same_pair_to_the_same_figures(tmp_path, capsys):
    figures = []
    for flags in (["--jit", "off"], ["--jit", "on"]):
        out = tmp_path / flags[1]
        code = main(
            ["train", "--objective", "TraceMeanField_ELBO", *SMALL, *flags, "--out", str(out)]
        )
        assert code == 0, capsys.readouterr().err
        history = json.loads((out / "history.json").read_text())
        figures.append((history["config"]["jit"], history["validation_elbo"]))
    (jit_off, python), (jit_on, traced) = figures
    assert (jit_off, jit_on) == (False, True)
    assert traced == pytest.approx(python, abs=1e-3)


def test_jit_on_refuses_what_it_cannot_record_in_one_line(tmp_path, capsys):
    # TraceEnum_ELBO reads values on the host; by default (--jit auto) it trains unrecorded.
    # (Every guide family records now: tests/pyrovae/train/test_traced.py.)
    out = str(tmp_path / "run")
    flags = ["train", *SMALL, "--objective", "TraceEnum_ELBO", "--jit", "on", "--out", out]
    code = main(flags)
    err = capsys.readouterr().err
    assert code != 0
    assert "jit=False" in err and "TraceEnum_ELBO" in err and "Traceback" not in err
