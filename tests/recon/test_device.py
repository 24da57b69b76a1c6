"""Device switch: auto falls back to the CPU, an unusable CUDA request is an error."""

from __future__ import annotations

import pytest
import torch

from models.__main__ import main as models_main
from recon.__main__ import main as recon_main
from recon.device import resolve_device


def test_auto_and_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_an_error(capsys):
    with pytest.raises(RuntimeError, match="torch sees no CUDA device"):
        resolve_device("cuda")
    assert recon_main(["device", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert models_main(["device", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("cpu (")


def test_unknown_device():
    with pytest.raises(ValueError, match="got 'tpu'"):
        resolve_device("tpu")
