"""Data-parallel training with torchrun: two CPU processes (gloo) stay identical and take
the steps one process takes on the same global batches; on a GPU machine, NCCL on CUDA
takes the steps gloo takes on the CPU."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyrovae.errors import PyrovaeError
from tests.conftest import requires_cuda

WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
ROOT = WORKER.parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(
    processes: int,
    out: Path,
    *extra: str,
    jit: bool = False,
    device: str = "cpu",
    rank1_time_limit: str = "",
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        "-m", "tests.distributed_worker", str(out),
        *extra,
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, cwd=ROOT, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1",
             # the repository first, then wherever this interpreter found pyro and torch
             "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
             "PYROVAE_TEST_JIT": "1" if jit else "0", "PYROVAE_TEST_DEVICE": device,
             "PYROVAE_TEST_RANK1_TIME_LIMIT": rank1_time_limit},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]


def test_two_processes_stay_identical_and_match_one_process(tmp_path):
    torchrun(2, tmp_path / "two", str(tmp_path / "two" / "run.pt"))
    torchrun(1, tmp_path / "one")
    torchrun(2, tmp_path / "jit", jit=True)  # each process replays its own recording
    single = torch.load(tmp_path / "one" / "rank0.pt")
    for run in ("two", "jit"):
        rank0 = torch.load(tmp_path / run / "rank0.pt")
        rank1 = torch.load(tmp_path / run / "rank1.pt")
        for name, value in rank0.items():
            assert torch.equal(value, rank1[name]), f"{run}: {name} differs between processes"
            torch.testing.assert_close(value, single[name], rtol=1e-4, atol=1e-5, msg=name)
    rank0 = torch.load(tmp_path / "two" / "rank0.pt")
    assert (tmp_path / "two" / "run.pt").exists()  # written by process 0
    moved = [n for n in rank0 if n != "validation_elbo"]
    initial = torch.load(tmp_path / "one" / "rank0.pt")
    assert moved and all(torch.isfinite(initial[n]).all() for n in moved)


def test_processes_stop_together_when_one_is_out_of_time(tmp_path):
    # only process 1 has a (millisecond) limit: both end after epoch 1, still identical
    torchrun(2, tmp_path / "limited", rank1_time_limit="0.001")
    rank0 = torch.load(tmp_path / "limited" / "rank0.pt")
    rank1 = torch.load(tmp_path / "limited" / "rank1.pt")
    assert rank0["epochs"].tolist() == rank1["epochs"].tolist() == [1]
    for name, value in rank0.items():
        assert torch.equal(value, rank1[name]), name


@requires_cuda
def test_nccl_on_cuda_takes_the_steps_gloo_takes_on_cpu(tmp_path):
    processes = min(torch.cuda.device_count(), 2)  # NCCL needs one GPU per process
    torchrun(processes, tmp_path / "nccl", device="cuda")
    torchrun(processes, tmp_path / "gloo")
    for rank in range(processes):
        on_gpu = torch.load(tmp_path / "nccl" / f"rank{rank}.pt", map_location="cpu")
        on_cpu = torch.load(tmp_path / "gloo" / f"rank{rank}.pt")
        assert on_gpu.keys() == on_cpu.keys()
        for name, value in on_cpu.items():
            torch.testing.assert_close(on_gpu[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_distributed_without_torchrun_says_how_to_launch(digits):
    from guides import build_guide
    from models import build_vae
    from pyrovae.train import fit

    model, guide = build_vae(64, 2, (16,)), build_guide(64, 2, "diagonal", (16,))
    with pytest.raises(PyrovaeError, match="torchrun --nproc-per-node N"):
        fit(model, guide, digits, epochs=1, progress=False, distributed=True)


def test_a_group_pyrovae_started_is_destroyed_at_exit_while_python_is_whole():
    # gloo threads left to the interpreter's finalisation can end a finished process in
    # SIGABRT; the handler pyrovae registers runs first (atexit is last in, first out)
    script = (
        "import atexit, torch.distributed as dist\n"
        "atexit.register(lambda: print('initialized at exit:', dist.is_initialized()))\n"
        "from pyrovae.train.distributed import DistributedContext\n"
        "context = DistributedContext.from_environment('cpu')\n"
        "print('rank', context.rank, 'of', context.world_size)\n"
    )
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    torchrun_env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}  # fmt: skip
    env = {**os.environ, **torchrun_env, "PYTHONPATH": path}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "rank 0 of 1" in result.stdout
    assert "initialized at exit: False" in result.stdout
