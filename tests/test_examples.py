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
