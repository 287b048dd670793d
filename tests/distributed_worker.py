"""Run by tests/test_distributed.py under torchrun: a few steps of data-parallel fit on a
deterministic pair (a Delta guide and gray-level digits: no noise anywhere), then each
process saves its parameters. PYROVAE_TEST_JIT=1 trains with jit=True; PYROVAE_TEST_DEVICE
names the device (cpu, the default, trains over gloo; cuda over NCCL, one GPU per process);
PYROVAE_TEST_RANK1_TIME_LIMIT gives process 1 alone that time limit (seconds)."""

import os
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.data import load_dataset
from pyrovae.train import fit


def main(out: Path, checkpoint: Path | None) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the same initial networks in every process and every run
    d = 2
    decoder = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 64))
    encoder = nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, d))
    device = os.environ.get("PYROVAE_TEST_DEVICE", "cpu")
    if device == "cuda":  # fit moves nn.Module pairs; these closures' networks move here
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        decoder.cuda()
        encoder.cuda()

    def model(x):
        pyro.module("ddp_decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(d), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), 0.3).to_event(1), obs=x)

    def guide(x):
        pyro.module("ddp_encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(encoder(x)).to_event(1))

    data = load_dataset("digits", binarize="none")
    rank1_limit = os.environ.get("PYROVAE_TEST_RANK1_TIME_LIMIT")
    is_rank1 = os.environ.get("RANK") == "1"
    history = fit(
        model,
        guide,
        data,
        epochs=2,
        batch_size=200,
        learning_rate=1e-2,
        progress=False,
        distributed=True,
        checkpoint=checkpoint,
        jit=os.environ.get("PYROVAE_TEST_JIT") == "1",
        device=device,
        time_limit=float(rank1_limit) if rank1_limit and is_rank1 else None,
    )
    rank = torch.distributed.get_rank()
    state = {f"decoder.{k}": v for k, v in decoder.state_dict().items()}
    state.update({f"encoder.{k}": v for k, v in encoder.state_dict().items()})
    state["validation_elbo"] = torch.tensor(history.validation_elbo)
    state["epochs"] = torch.tensor(history.epoch)
    torch.save(state, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
