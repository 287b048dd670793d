#!/usr/bin/env bash
# Every check that needs a GPU, in one go, each logged to its own file in LOG_DIR:
# the CUDA tests (`pytest -m cuda`), then every benchmark with --device cuda, each
# printing its ratio against a reference timed in the same run. A failing step is
# reported and the next one runs. Run from the repository root on a CUDA machine:
#
#     bash benchmarks/gpu_checks.sh [LOG_DIR]     # LOG_DIR defaults to runs/gpu_checks
#
# PYTHON names the interpreter (default python3); it needs torch with CUDA, pyro-ppl,
# the arviz preview packages and pytest. Fashion-MNIST is read where Debian's
# dataset-fashion-mnist puts it, /usr/share/datasets/fashion-mnist (copy its four IDX
# files there on a machine without apt); fit_epoch.py uses random images without them.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
LOG_DIR=${1:-runs/gpu_checks}
mkdir -p "$LOG_DIR"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
failed=()

check() {  # check NAME COMMAND...: run it, log it, remember a failure
    local name=$1
    shift
    echo "== $name: $*"
    if "$@" >"$LOG_DIR/$name.log" 2>&1; then
        grep -E "passed|failed|ratio" "$LOG_DIR/$name.log" | tail -n 12
    else
        echo "   FAILED (exit $?); last lines of $LOG_DIR/$name.log:"
        tail -n 5 "$LOG_DIR/$name.log"
        failed+=("$name")
    fi
}

"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" || exit 1
check pytest_cuda "$PYTHON" -m pytest -m cuda -q -p no:cacheprovider
check svi_step "$PYTHON" benchmarks/svi_step.py --device cuda --rounds 30
check fit_epoch "$PYTHON" benchmarks/fit_epoch.py --device cuda --rounds 5
check fit_epoch_1024 "$PYTHON" benchmarks/fit_epoch.py --device cuda --rounds 5 --batch-size 1024
check iwae_eval "$PYTHON" benchmarks/iwae_eval.py --device cuda --sample-chunk 1000
check vamp_prior "$PYTHON" benchmarks/vamp_prior.py --device cuda
check vamp_flow "$PYTHON" benchmarks/vamp_flow.py --device cuda
check guide_families "$PYTHON" benchmarks/guide_families.py --device cuda
check guide_families_vamp "$PYTHON" benchmarks/guide_families.py --device cuda --prior vamp --families diagonal,full,flow,vmf --protocol
check vmf_sampler "$PYTHON" benchmarks/vmf_sampler.py --device cuda

if ((${#failed[@]})); then
    echo "failed: ${failed[*]}"
    exit 1
fi
echo "all GPU checks passed; logs in $LOG_DIR"
