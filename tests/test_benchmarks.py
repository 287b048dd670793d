"""Every benchmark script runs (one tiny round) and prints its ratio: they never rot."""

import subprocess
import sys
from pathlib import Path

import pytest

from pyrovae.data import FASHION_MNIST_DIR

FASHION_AVAILABLE = (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists()
BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = ["--rounds", "1", "--steps", "1", "--warmup", "1"]
CHEAP_RUNS = {
    "svi_step.py": [*TINY, "--hidden", "32", "--latent-dim", "4"],
    "import_cost.py": ["--rounds", "1"],
    "fashion_mnist.py": [
        *("--pairs", "standard+diagonal,hvae:vamp+diagonal", "--epoch-budget", "1", "--evaluate"),
        *("--train-size", "300", "--test-points", "10", "--num-samples", "30", "--out", "fm"),
        *("--jobs", "2", "--time-limit", "600"),  # each pair in its own process
    ],
    "iwae_eval.py": ["--num-samples", "30", "--images", "10", "--rounds", "1"],
    "fit_epoch.py": [
        *("--rounds", "1", "--epochs", "2", "--train-size", "200", "--validation-size", "100"),
        *("--features", "16", "--hidden", "8", "8", "--latent-dim", "2"),  # the host-bound setup
    ],
    "guide_families.py": [*TINY, "--hidden", "32", "--latent-dim", "4"],
    "vamp_prior.py": [
        *("--rounds", "1", "--repeats", "1", "--components", "8", "--latent-dim", "3"),
        *("--batch", "5", "--eval-values", "200"),
    ],
    "vamp_flow.py": [
        *("--rounds", "1", "--batch-size", "2", "--latent-dim", "3", "--pseudo-inputs", "4"),
    ],
    "vmf_sampler.py": [*TINY, "--dims", "3", "--batch-size", "8", "--kl-batch", "8"],
}

# what a cheap run must print besides its ratio: the networks its flags asked for
PRINTED = {"fit_epoch.py": "fit epoch: gated 16-8-8, z = 2"}


def test_every_benchmark_is_listed():
    scripts = {p.name for p in BENCH_DIR.glob("*.py")} - {"common.py"}
    assert scripts == set(CHEAP_RUNS), f"add these to CHEAP_RUNS: {scripts - set(CHEAP_RUNS)}"


@pytest.mark.parametrize("script", sorted(CHEAP_RUNS))
def test_benchmark_runs_and_prints_a_ratio(script, tmp_path):
    if script == "fashion_mnist.py" and not FASHION_AVAILABLE:
        pytest.skip("needs Debian's dataset-fashion-mnist (make test installs it)")
    result = subprocess.run(
        [sys.executable, str(BENCH_DIR / script), *CHEAP_RUNS[script]],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ratio" in result.stdout
    assert PRINTED.get(script, "ratio") in result.stdout


def test_gpu_checks_runs_existing_benchmarks_with_flags_they_take():
    """benchmarks/gpu_checks.sh runs only on a GPU machine: check here that each benchmark
    it names exists and parses the flags it is given, so the script does not rot."""
    import importlib.util
    import shlex

    script = (BENCH_DIR / "gpu_checks.sh").read_text()
    calls = [
        shlex.split(line.split('"$PYTHON"', 1)[1])
        for line in script.splitlines()
        if line.startswith("check ") and "benchmarks/" in line
    ]
    assert len(calls) >= 7
    sys.path.insert(0, str(BENCH_DIR))
    try:
        for path, *flags in calls:
            spec = importlib.util.spec_from_file_location(Path(path).stem, BENCH_DIR.parent / path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            assert module.parse_args(flags).device == "cuda", path
    finally:
        sys.path.remove(str(BENCH_DIR))
