"""A run killed with SIGKILL in the middle of an epoch resumes to the bit-identical result
of an uninterrupted run (real processes, real signal)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pyrovae.errors import PyrovaeError
from pyrovae.train import load_checkpoint

# ~130 steps per epoch: a kill lands inside an epoch, not between them
RUN = ["train", "--epochs", "5", "--batch-size", "10", "--latent-dim", "2", "--hidden", "32"]
RUN += ["--no-progress", "--seed", "7"]


def pyrovae(*args, log) -> subprocess.Popen:
    """The CLI in its own process; stderr goes to ``log`` (a file: no pipe left open)."""
    with open(log, "w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "pyrovae.cli", *RUN, *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def saved_epoch(path) -> int:
    try:
        return load_checkpoint(path).epoch
    except PyrovaeError:  # not written yet
        return 0


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    logs = {name: tmp_path / f"{name}.err" for name in ("reference", "victim", "resumed")}
    reference = pyrovae("--out", str(whole), log=logs["reference"])

    victim = pyrovae("--out", str(killed), log=logs["victim"])
    checkpoint = killed / "checkpoint.pt"
    deadline = time.monotonic() + 240
    while saved_epoch(checkpoint) < 2:
        assert victim.poll() is None, logs["victim"].read_text()
        assert time.monotonic() < deadline, "the run never wrote epoch 2"
        time.sleep(0.02)
    time.sleep(0.1)  # into epoch 3
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    interrupted_at = load_checkpoint(checkpoint).epoch
    assert 2 <= interrupted_at < 5

    resumed = pyrovae("--out", str(killed), "--resume", str(checkpoint), log=logs["resumed"])
    assert resumed.wait(timeout=300) == 0, logs["resumed"].read_text()
    assert reference.wait(timeout=300) == 0, logs["reference"].read_text()

    a, b = load_checkpoint(whole / "checkpoint.pt"), load_checkpoint(checkpoint)
    assert a.epoch == b.epoch == 5
    for name in a.params:
        assert torch.equal(a.params[name], b.params[name]), name
    history_a = json.loads((whole / "history.json").read_text())
    history_b = json.loads((killed / "history.json").read_text())
    assert history_a["validation_elbo"] == history_b["validation_elbo"]
    assert history_a["epoch"] == history_b["epoch"] == [1, 2, 3, 4, 5]
