"""Every bad input a user or an attacker gave the CLI, and the one line it now answers
with. Observed before: tracebacks for FloatingPointError, RuntimeError (--device gpu, a
resume size mismatch), KeyError, struct.error, EOFError, BadGzipFile, TypeError,
FileExistsError (--out is a file) and ZeroDivisionError (compare --diag-samples 1);
"math domain error" for compare --num-samples 0."""

import gzip
import struct

import numpy as np
import pytest
import torch

from pyrovae.cli import main

FAST = ["--epochs", "1", "--latent-dim", "2", "--hidden", "16", "--no-progress"]


def idx_folder(tmp_path, train_bytes: bytes, name="train-images-idx3-ubyte"):
    folder = tmp_path / "idx"
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(train_bytes)
    return folder


def setup_truncated_header(tmp_path):
    return ["--dataset", "idx", "--data-dir", str(idx_folder(tmp_path, b"\x00\x00\x08\x03\x00"))]


def setup_truncated_gzip(tmp_path):
    whole = gzip.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, 2, 2, 2) + bytes(8))
    folder = idx_folder(tmp_path, whole[:-12], "train-images-idx3-ubyte.gz")
    return ["--dataset", "idx", "--data-dir", str(folder)]


def setup_not_gzip(tmp_path):
    folder = idx_folder(tmp_path, b"plain bytes", "train-images-idx3-ubyte.gz")
    return ["--dataset", "idx", "--data-dir", str(folder)]


def setup_out_is_a_file(tmp_path):
    (tmp_path / "taken").write_text("a file")
    return ["--out", str(tmp_path / "taken")]


def setup_resume_other_size(tmp_path):
    assert main(["train", *FAST, "--out", str(tmp_path / "a")]) == 0
    return ["--resume", str(tmp_path / "a" / "checkpoint.pt"), "--override", "latent_dim,pair"]


def setup_resume_garbage(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"\x80\x02garbage")
    return ["--resume", str(tmp_path / "garbage.pt")]


def setup_npz(tmp_path):
    np.savez(tmp_path / "d.npz", train=np.random.rand(40, 6), validation=np.random.rand(8, 5))
    return ["--dataset", "npz", "--data-path", str(tmp_path / "d.npz"), "--binarize", "none"]


def nothing(tmp_path):
    return []


# (name, command, extra flags made by setup, expected exit code, expected message)
CASES = [
    ("unknown prior", ["train", "--prior", "vampp"], nothing, 2, "did you mean 'vamp'"),
    ("device gpu", ["train", *FAST, "--device", "gpu"], nothing, 2, "device='gpu' is not a device"),
    (
        "cuda without a gpu",
        ["train", *FAST, "--device", "cuda"],
        nothing,
        2,
        "CUDA is not available",
    ),
    ("lr 0", ["train", "--lr", "0"], nothing, 2, "must be finite and > 0"),
    ("lr inf", ["train", "--lr", "inf"], nothing, 2, "must be finite and > 0"),
    ("epochs 0", ["train", "--epochs", "0"], nothing, 2, "must be >= 1"),
    ("latent dim 0", ["train", "--latent-dim", "0"], nothing, 2, "must be >= 1"),
    ("batch size text", ["train", "--batch-size", "ten"], nothing, 2, "expected an integer"),
    (
        "flows 0",
        ["train", *FAST, "--guide", "flow", "--guide-flow-num-flows", "0"],
        nothing,
        2,
        "num_flows >= 1",
    ),
    ("num-samples 0", ["compare", "--num-samples", "0"], nothing, 2, "must be >= 1"),
    ("diag-samples 1", ["compare", "--diag-samples", "1"], nothing, 2, "must be >= 25"),
    (
        "num-validation too big",
        ["train", *FAST, "--num-validation", "5000"],
        nothing,
        2,
        "num_validation=5000 but digits has 1572",
    ),
    ("npz without a path", ["train", *FAST, "--dataset", "npz"], nothing, 2, "--data-path"),
    (
        "npz split features differ",
        ["train", *FAST],
        setup_npz,
        2,
        "validation split has 5 features per row but the train split has 6",
    ),
    (
        "truncated IDX header",
        ["train", *FAST],
        setup_truncated_header,
        2,
        "truncated inside its header",
    ),
    ("truncated gzip", ["train", *FAST], setup_truncated_gzip, 2, "not a complete gzip file"),
    ("not gzip", ["train", *FAST], setup_not_gzip, 2, "not a complete gzip file"),
    ("--out is a file", ["train", *FAST], setup_out_is_a_file, 2, "exists and is not a folder"),
    (
        "resume another size",
        ["train", "--epochs", "2", "--latent-dim", "3", "--hidden", "16", "--no-progress"],
        setup_resume_other_size,
        2,
        "decoder.0.weight (16, 2) vs",
    ),
    ("resume a foreign file", ["train", *FAST], setup_resume_garbage, 2, "plain torch file"),
    (
        "diverging training",
        ["train", *FAST, "--lr", "1e6"],
        nothing,
        1,
        "TrainingDiverged: epoch 1",
    ),
]


NEEDS_NO_GPU = {"cuda without a gpu"}


@pytest.mark.parametrize(
    "argv, setup, code, message",
    [
        pytest.param(
            *case[1:],
            id=case[0],
            marks=pytest.mark.skipif(
                case[0] in NEEDS_NO_GPU and torch.cuda.is_available(), reason="a GPU is present"
            ),
        )
        for case in CASES
    ],
)
def test_bad_input_gets_one_line_and_an_exit_status(argv, setup, code, message, tmp_path, capsys):
    extra = setup(tmp_path)
    if "--out" not in extra:
        extra += ["--out", str(tmp_path / "out")]
    try:
        returned = main([*argv, *extra])
    except SystemExit as exit_info:  # argparse refuses flags before anything runs
        returned = exit_info.code
    err = capsys.readouterr().err
    assert returned == code, err
    assert message in err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(("pyrovae train: error:", "pyrovae compare: error:")), err
