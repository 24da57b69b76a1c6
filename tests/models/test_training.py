"""The training loop: resumed runs equal uninterrupted ones, seeds fix the weights, bad or
foreign checkpoints are refused with the file named, a stale checkpoint is set aside; the
train and generate stages write their contracts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from models.__main__ import main as models_main
from models.data.positron_dataset import to_activity
from models.training import loop as loop_module
from models.training.checkpoint import load_checkpoint
from models.training.generate import run_generate
from models.training.history import read_history
from models.training.stage import run_train
from pipeline.specs import generate_spec, train_spec
from tests.models.fixtures import make_generative_inputs, tiny_generative_config


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("generative")
    cfg = tiny_generative_config()
    return cfg, make_generative_inputs(root, cfg)


def _train(cfg, files, out_dir, **overwrite):
    return run_train(train_spec(cfg, "tubes", "attention_gan"), files, out_dir, **overwrite)


def _weights(path):
    return load_checkpoint(path, "final", "attention_gan")["nets"]


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_resumed_run_equals_an_uninterrupted_one(inputs, tmp_path, monkeypatch):
    cfg, files = inputs
    _train(cfg, files, tmp_path / "whole")  # 6 steps
    half = tiny_generative_config(steps=3)
    _train(half, files, tmp_path / "split")
    assert load_checkpoint(tmp_path / "split/checkpoint.pt", "checkpoint")["step"] == 3
    _train(cfg, files, tmp_path / "split", overwrite=True)  # resumes at 3
    _assert_same(_weights(tmp_path / "whole/final.pt"), _weights(tmp_path / "split/final.pt"))
    whole = load_checkpoint(tmp_path / "whole/checkpoint.pt", "checkpoint")
    split = load_checkpoint(tmp_path / "split/checkpoint.pt", "checkpoint")
    _assert_same(whole["ema"]["generator"], split["ema"]["generator"])
    # History rows over the same steps agree (the stopped run also logged its last step).
    assert [r["step"] for r in split["history"]] == [2, 3, 4, 6]
    for step in (2, 6):
        row_w = next(r for r in whole["history"] if r["step"] == step)
        row_s = next(r for r in split["history"] if r["step"] == step)
        assert row_w["g_loss"] == row_s["g_loss"] and row_w["d_loss"] == row_s["d_loss"]

    # A run killed after its checkpoint at step 4 leaves no final.pt and resumes there.
    real_step = loop_module.Trainer.train_step

    def dies_at_step_5(self):
        if self.step == 5:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(loop_module.Trainer, "train_step", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        _train(cfg, files, tmp_path / "killed")
    assert not (tmp_path / "killed/final.pt").exists()
    assert load_checkpoint(tmp_path / "killed/checkpoint.pt", "checkpoint")["step"] == 4
    assert not list(tmp_path.rglob("*.tmp"))
    monkeypatch.setattr(loop_module.Trainer, "train_step", real_step)
    _train(cfg, files, tmp_path / "killed")
    _assert_same(_weights(tmp_path / "whole/final.pt"), _weights(tmp_path / "killed/final.pt"))


@pytest.mark.slow
def test_same_seed_same_weights_other_seed_other_weights(inputs, tmp_path):
    cfg, files = inputs
    _train(cfg, files, tmp_path / "a")
    _train(cfg, files, tmp_path / "b")
    _assert_same(_weights(tmp_path / "a/final.pt"), _weights(tmp_path / "b/final.pt"))
    _train(tiny_generative_config(seed=7), files, tmp_path / "c")
    a, c = _weights(tmp_path / "a/final.pt"), _weights(tmp_path / "c/final.pt")
    assert not torch.equal(a["generator.head.2.weight"], c["generator.head.2.weight"])


def test_outputs_of_the_train_stage(inputs, tmp_path):
    cfg, files = inputs
    out = tmp_path / "run"
    _train(cfg, files, out)
    rows = read_history(out / "history.csv")
    assert [r["step"] for r in rows] == [2, 4, 6]
    for name in ("d_loss", "g_gan", "g_apg", "lr_generator", "seconds", "images_per_s"):
        assert all(np.isfinite(r[name]) for r in rows), name
    assert all(r["images_per_s"] > 0 for r in rows)
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_000003.png",
                                                                  "step_000006.png"]
    for name in ("samples.png", "losses.png", "checkpoint.pt"):
        assert (out / name).stat().st_size > 0
    final = load_checkpoint(out / "final.pt", "final", "attention_gan")
    assert final["step"] == 6 and final["arch"]["image_size"] == 16
    assert json.loads(final["provenance"]["params"])["steps"] == 6
    # final.pt samples with the EMA copy of the generator, not the raw weights.
    raw = load_checkpoint(out / "checkpoint.pt", "checkpoint")
    ema = {k.removeprefix("module."): v for k, v in raw["ema"]["generator"].items()
           if k.startswith("module.")}
    torch.testing.assert_close(final["nets"]["generator.head.2.weight"],
                               ema["head.2.weight"])
    assert not torch.equal(final["nets"]["generator.head.2.weight"],
                           raw["nets"]["generator.head.2.weight"])
    with pytest.raises(FileExistsError, match="final.pt exists"):
        _train(cfg, files, out)


def test_bad_and_foreign_checkpoints_are_refused(inputs, tmp_path, capsys):
    cfg, files = inputs
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=f"{out / 'checkpoint.pt'}: not a readable model"):
        _train(cfg, files, out)
    torch.save({"state": torch.zeros(2)}, out / "checkpoint.pt")
    with pytest.raises(ValueError, match="not a positron-nde model checkpoint"):
        _train(cfg, files, out)
    # The CT VAE's checkpoint where the attention GAN's belongs.
    (out / "checkpoint.pt").write_bytes((files["encoder"].parent / "checkpoint.pt").read_bytes())
    with pytest.raises(ValueError, match="checkpoint of method 'vae', expected 'attention_gan'"):
        _train(cfg, files, out)
    # A final.pt is not a checkpoint to resume from.
    (out / "checkpoint.pt").write_bytes(files["encoder"].read_bytes())
    with pytest.raises(ValueError, match="a 'final' file where a 'checkpoint' file"):
        _train(cfg, files, out)
    # Through the command line: one line, exit code 2, nothing written.
    code = models_main(["train", "--spec", json.dumps(train_spec(cfg, "tubes", "attention_gan")),
                        "--positron", str(files["positron"]), "--ct", str(files["ct"]),
                        "--features", str(files["features"]), "--encoder",
                        str(files["encoder"]), "--out-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "checkpoint.pt: a 'final' file" in err and len(err.splitlines()) == 1
    assert not (out / "final.pt").exists()
    # A damaged encoder file is named too.
    bad = tmp_path / "bad_encoder.pt"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=f"{bad}: not a readable model checkpoint"):
        _train(cfg, {**files, "encoder": bad}, tmp_path / "other")


@pytest.mark.slow
def test_checkpoint_of_other_settings_is_set_aside(inputs, tmp_path):
    cfg, files = inputs
    _train(tiny_generative_config(steps=2, lr=1e-3), files, tmp_path / "run")
    _train(cfg, files, tmp_path / "run", overwrite=True)
    aside = list((tmp_path / "run").glob("checkpoint.stale-*-step2.pt"))
    assert len(aside) == 1
    _train(cfg, files, tmp_path / "fresh")
    _assert_same(_weights(tmp_path / "run/final.pt"), _weights(tmp_path / "fresh/final.pt"))


def test_generated_set(inputs, tmp_path):
    cfg, files = inputs
    _train(cfg, files, tmp_path / "run")
    spec = generate_spec(cfg, "tubes", "attention_gan")
    out = tmp_path / "generated.h5"
    run_generate(spec, tmp_path / "run/final.pt", files["positron"], files["ct"], out)
    with h5py.File(out) as f, h5py.File(files["positron"]) as p:
        images, scale = f["images"][...], f["scale"][...]
        assert images.shape == (20, 16, 16) and images.dtype == np.float32
        assert np.all(np.abs(images) <= 1) and images.std() > 0
        for key in ("normalisation", "size_px", "orientation"):
            assert f.attrs[key] == p.attrs[key]
        keep = (p["split"][...].astype(str) == "train") & (
            p["acquisition"][...].astype(str) == "reference")
        assert set(scale.tolist()) <= set(p["scale"][...][keep].tolist())
        assert f.attrs["method"] == "attention_gan" and len(f.attrs["checkpoint_sha256"]) == 64
        np.testing.assert_allclose(to_activity(images, scale),
                                   (images.astype(np.float64) + 1) / 2 * scale[:, None, None])
    again = tmp_path / "again.h5"
    run_generate(spec, tmp_path / "run/final.pt", files["positron"], files["ct"], again)
    with h5py.File(out) as a, h5py.File(again) as b:
        np.testing.assert_array_equal(a["images"][...], b["images"][...])
    with pytest.raises(FileExistsError):
        run_generate(spec, tmp_path / "run/final.pt", files["positron"], files["ct"], out)


@pytest.mark.slow
def test_sigterm_leaves_a_resumable_checkpoint_and_no_partial_file(inputs, tmp_path):
    """A job stopped by SIGTERM (Snakemake, a cluster's time limit) exits 143 with its last
    checkpoint complete, no final.pt, no temporary file and no process left."""
    cfg, files = inputs
    long = tiny_generative_config(steps=100000, checkpoint_every=5, sample_every=50)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "models", "train", "--spec",
           json.dumps(train_spec(long, "tubes", "attention_gan")), "--out-dir", str(out),
           *[a for role in ("positron", "ct", "features", "encoder")
             for a in (f"--{role}", str(files[role]))], "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    # stderr to a file, not a pipe: a pipe nobody reads blocks the job once it fills.
    log = tmp_path / "stderr.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(cmd, stderr=stderr, text=True, env=env)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("no exit 120 s after SIGTERM: " + log.read_text()[-3000:]) from None
    assert code == 128 + signal.SIGTERM, log.read_text()[-3000:]
    print(f"stderr of the stopped job: {log.stat().st_size} bytes")
    assert not (out / "final.pt").exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    step = load_checkpoint(out / "checkpoint.pt", "checkpoint")["step"]
    assert step >= 5 and step % 5 == 0


def test_a_full_disk_at_a_checkpoint_names_the_checkpoint(inputs, tiny_disk, capsys):
    """torch's writer says "enforce fail ... unexpected pos" when the disk fills: the user
    reads the checkpoint's path and the cause, on one line, and no partial file is left."""
    cfg, files = inputs
    filler = tiny_disk / "filler"
    filler.write_bytes(b"\0" * 1_990_000)  # about 60 kB left of the 2 MB
    out = tiny_disk / "run"
    code = models_main(["train", "--spec", json.dumps(train_spec(cfg, "tubes", "attention_gan")),
                        "--out-dir", str(out),
                        *[a for role in ("positron", "ct", "features", "encoder")
                          for a in (f"--{role}", str(files[role]))], "--threads", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, err
    assert errors[0].startswith(f"error: {out}/") and "no space left on the device" in \
        errors[0], errors
    assert "enforce fail" not in errors[0] and "Traceback" not in "\n".join(err)
    assert not [p for p in tiny_disk.rglob("*") if p.name.startswith(".")]
