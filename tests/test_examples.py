"""Every script in examples/ runs with cheap arguments (Pyro's test_examples habit)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"

CHEAP_RUNS = {
    "vae_digits.py": ["--epochs", "2", "--hidden", "32"],
    "full_covariance.py": ["--epochs", "2", "--hidden", "32", "--latent-dim", "3"],
    "elbo_surgery.py": ["--epochs", "2", "--hidden", "32", "--latent-dims", "2,3"],
    "aggregated_posterior.py": ["--epochs", "2", "--hidden", "32", "--num-samples", "50"],
    "hierarchical.py": [
        *("--epochs", "1", "--hidden", "16", "--latent-dim", "2"),
        *("--num-samples", "20", "--warmup-epochs", "0", "--test-points", "30"),
    ],
    "gmvae_clustering.py": [
        *("--epochs", "1", "--hidden", "16", "--latent-dim", "2", "--clusters", "3"),
        *("--num-samples", "20", "--warmup-epochs", "0", "--test-points", "30"),
    ],
    "semi_supervised.py": [
        *("--epochs", "1", "--hidden", "16", "--classifier-steps", "5"),
        *("--num-samples", "10", "--test-points", "30"),
    ],
    "custom_model.py": [
        *("--epochs", "1", "--hidden", "16", "--latent-dim", "2", "--num-samples", "20"),
        *("--diag-samples", "30", "--eval-points", "20"),
    ],
    "latent_geometry.py": [
        *("--epochs", "1", "--hidden", "16", "--latent-dim", "3"),
        *("--num-samples", "20", "--pseudo-inputs", "5", "--warmup-epochs", "0"),
    ],
}


def test_every_example_is_listed():
    scripts = {p.name for p in EXAMPLES_DIR.glob("*.py")}
    assert scripts == set(CHEAP_RUNS), f"add these to CHEAP_RUNS: {scripts - set(CHEAP_RUNS)}"


@pytest.mark.parametrize("script", sorted(CHEAP_RUNS))
def test_example_runs(script, tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES_DIR / script), *CHEAP_RUNS[script], "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert any(tmp_path.iterdir()), "the example wrote no output"


@pytest.mark.parametrize("script", sorted(CHEAP_RUNS))
def test_every_example_option_has_help_and_the_common_flags_exist(script):
    """Read from the source (no process): each add_argument call passes help=, and every
    example takes --seed, --device, --epochs and --dataset."""
    import ast

    tree = ast.parse((EXAMPLES_DIR / script).read_text())
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument"
    ]
    flags = {c.args[0].value for c in calls if c.args and isinstance(c.args[0], ast.Constant)}
    assert {"--seed", "--device", "--epochs", "--dataset", "--out"} <= flags
    missing = [c.args[0].value for c in calls if not any(k.arg == "help" for k in c.keywords)]
    assert not missing, f"{script}: options without help: {missing}"
