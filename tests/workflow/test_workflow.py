"""The Snakemake workflow: a bad config stops the run before any job; the DAG has the jobs the
config asks for; one phantom job runs end to end through its rule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from recon.image_io import read_recon
from sim.listmode.file import read_listmode
from tests.workflow.sandbox import copy_workflow

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _snakemake(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    # Jobs run `python -m sim ...`: make that the interpreter running the tests. The whole
    # tiny DAG takes about 2.5 minutes on a busy 2-core machine: the limit is for a hang
    # (pytest's own, 20 minutes, is the last resort), not for a slow machine.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True,
                         timeout=900, env=env)
    run.output = run.stdout + run.stderr
    return run


def test_bad_config_stops_before_any_job(tmp_path):
    run = _snakemake("--dry-run", "--config", "engine=geant")
    assert run.returncode != 0
    assert "config key engine: 'geant' is not one of fast, opengate, gate9" in run.output
    assert "Building DAG" not in run.output
    overlay = tmp_path / "bad.yaml"
    overlay.write_text("datasets:\n  tubes:\n    tube:\n      wall_thickness_mm: [45, 50]\n")
    run = _snakemake("--dry-run", "--configfile", str(overlay))
    assert run.returncode != 0
    assert "config key datasets.tubes.tube.wall_thickness_mm" in run.output


def test_dry_run_lists_every_phantom_of_the_qa_overlay():
    run = _snakemake("--dry-run", "--quiet", "rules", "--configfile", "config/qa.yaml")
    assert run.returncode == 0, run.output
    assert "phantom" in run.output
    run = _snakemake("--dry-run", "--configfile", "config/qa.yaml")
    text = run.output
    for target in ("qa_point/phantoms/point_0000.h5", "qa_line/phantoms/line_0000.h5",
                   "qa_nema/phantoms/nema_0000.h5"):
        assert f"results/{target}" in text
    for target in ("qa_point/listmode/point_0000/short.h5", "qa_nema/listmode/nema_0000/short.h5"):
        assert f"results/{target}" in text
    assert "rule simulate" in text
    assert "results/qa_point/recon/point_0000/short.h5" in text
    assert "rule system_matrix_2d" in text
    assert "results/tubes/" not in text  # run_datasets restricts the run


def test_3d_mode_adds_the_sensitivity_jobs(tmp_path):
    """mode 3d swaps the 2D system matrix for sensitivity images: per phantom with
    attenuation correction, once per dataset without."""
    for correct, expected in ((True, "results/tubes/recon/tube_0000/_sensitivity_3d.h5"),
                              (False, "results/tubes/recon/sensitivity_3d.h5")):
        overlay = tmp_path / f"3d_{correct}.yaml"
        scatter = "sss" if correct else "none"  # scatter estimation needs the mu map
        overlay.write_text(f"recon: {{mode: 3d, tof: true, attenuation_correction: "
                           f"{str(correct).lower()}, scatter: {scatter}}}\n")
        run = _snakemake("--dry-run", "--configfile", "config/config.yaml", str(overlay))
        assert run.returncode == 0, run.output[-2000:]
        assert expected in run.output
        assert "system_matrix_2d" not in run.output


def test_default_dag_trains_and_generates(tmp_path):
    """The default target ends in the generative stage; without methods it stops at the
    image sets."""
    run = _snakemake("--dry-run", "--forceall")
    assert run.returncode == 0, run.output[-2000:]
    for target in ("results/tubes/models/vae_ct/final.pt", "results/tubes/models/features.h5",
                   "results/tubes/models/attention_gan/final.pt",
                   "results/tubes/generated/attention_gan.h5",
                   "results/tubes/models/pix2pix/final.pt", "results/tubes/enhance/enhance.md",
                   "results/tubes/generated/mask2image_global.h5",
                   "results/tubes/eval/downstream.json"):
        assert target in run.output, target
    assert "results/tubes/generated/pix2pix.h5" not in run.output  # not a Table 1 row
    for rule in ("pretrain_vae", "positron_features", "train", "generate", "enhance",
                 "downstream"):
        assert f"rule {rule}:" in run.output, rule
    seeds = tmp_path / "seeds.yaml"
    seeds.write_text("evaluate: {seeds: [3, 4]}\n")
    run = _snakemake("--dry-run", "--forceall", "--configfile", "config/config.yaml",
                     str(seeds))
    assert run.returncode == 0, run.output[-2000:]
    for target in ("models/vae__seed3/final.pt", "models/vae__seed4/final.pt",
                   "generated/wgan_gp__seed4.h5"):
        assert f"results/tubes/{target}" in run.output, target
    assert "results/tubes/models/vae/final.pt" not in run.output
    overlay = tmp_path / "none.yaml"
    overlay.write_text("train: {methods: []}\n")
    run = _snakemake("--dry-run", "--forceall", "--configfile", "config/config.yaml",
                     str(overlay))
    assert run.returncode == 0 and "rule train:" not in run.output
    assert "results/tubes/datasets/positron.h5" in run.output


def test_the_scarcity_curve_trains_each_generator_on_each_subset(tmp_path):
    """On request only: a subset image set per size and draw, each labelled generator (and
    the attention GAN's feature memory) trained and sampled on it, the whole split's
    generated sets reused, and one scarcity job reading them all."""
    overlay = tmp_path / "scarcity.yaml"
    overlay.write_text("scarcity: {sizes: [1], draws: 2,"
                       " methods: [attention_gan_conditional, mask2image_patch]}\n"
                       "train: {methods: [attention_gan_conditional, mask2image_patch]}\n")
    run = _snakemake("--dry-run", "--forceall", "scarcity_curve", "--configfile",
                     "config/config.yaml", str(overlay))
    assert run.returncode == 0, run.output[-2000:]
    base = "results/tubes/scarcity"
    for subset in ("n1_d0", "n1_d1"):
        for target in ("datasets/positron.h5", "models/features.h5",
                       "models/mask2image_patch/final.pt",
                       "generated/attention_gan_conditional.h5"):
            assert f"{base}/{subset}/{target}" in run.output, (subset, target)
    assert f"{base}/n2_d0" not in run.output  # 2 is the whole training split
    assert "results/tubes/generated/mask2image_patch.h5" in run.output
    assert "--generated all/mask2image_patch=results/tubes/generated/mask2image_patch.h5" \
        in run.output
    for rule in ("scarcity_subset", "scarcity_features", "scarcity_train",
                 "scarcity_generate", "scarcity"):
        assert f"rule {rule}:" in run.output, rule
    default = _snakemake("--dry-run", "--forceall")
    assert "scarcity" not in default.output  # not part of the default target


def test_documented_command_runs_a_job_without_the_venv_activated(tmp_path):
    """The README's form `.venv/bin/snakemake ...` with the venv not on PATH: every rule's
    `python -m ...` must still be the venv's interpreter (not the system's, or none)."""
    snakemake = Path(sys.executable).parent / "snakemake"
    assert snakemake.is_file(), f"{snakemake}: the install step did not put snakemake there"
    copy_workflow(tmp_path)
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    run = subprocess.run([str(snakemake), "results/qa_point/phantoms/point_0000.h5", "--cores",
                          "1", "--configfile", "config/qa.yaml"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    with h5py.File(tmp_path / "results/qa_point/phantoms/point_0000.h5") as fh:
        assert fh["activity"].shape == (32, 64, 64)


@pytest.mark.slow
def test_phantom_and_simulate_rules_run(tmp_path):
    """Run the real rules on a copy of the workflow with a tiny QA dataset."""
    copy_workflow(tmp_path)
    overlay = tmp_path / "tiny.yaml"
    overlay.write_text(
        "run_datasets: [tiny]\n"
        "datasets:\n  tiny:\n    family: point\n    n_phantoms: 2\n    acquisitions: [paper]\n"
        "    grid: {shape: [8, 16, 16], voxel_size_mm: [1.0, 1.0, 1.0]}\n"
        "crosscheck: {dataset: tiny, phantom: point_0001, acquisition: paper,"
        " engines: [fast, fast]}\n"
        "positron_images: {low_count: paper, size_px: 16, min_activity_fraction: 0.0}\n"
        "ct_images: {n_images: 8, size_px: 16}\n"
        "positron_features: {patch_px: 3, filters: [2, 2], block_px: 8, memory_dim: 1,"
        " memory_slots: 2}\n"
        "pretrain_vae: {steps: 2, batch_size: 4, base_channels: 4, latent_dim: 4}\n"
        "train: {acquisition: paper, steps: 3, batch_size: 4, sample_every: 2,"
        " methods: [attention_gan, dcgan_conditional, mask2image_patch],"
        " dcgan_conditional: {generator_channels: 4, discriminator_channels: 4},"
        " mask2image_patch: {generator_channels: 4, discriminator_channels: 4},"
        " checkpoint_every: 2, log_every: 1, n_samples: 4, attention_gan: {generator:"
        " {base_channels: 8, growth_rate: 4}, discriminator: {base_channels: 4}}}\n"
        "generate: {n_images: 6}\n"
        "evaluate: {msssim: {scales: 1, window_px: 7, pairs: 10}, kid_subset_size: 2,"
        " kid_subsets: 5, prdc_k: 1, held_out_split: val, walk_steps: 3,"
        " feature_network: {epochs: 1}}\n"
        "downstream: {epochs: 1, seeds: [1], channels: 4}\n"
        "validation: {datasets: [tiny], acquisition: paper, realisations: 2}\n"
        "detectability_study: {datasets: [tiny], acquisition: paper, fractions: [0.5, 1.0],"
        " bootstrap: 100}\n"
        "simulation: {statistical: {photons_per_cell: 10, background_decays: 20000}}\n"
    )
    run = _snakemake("--cores", "2", "--configfile", str(overlay), cwd=tmp_path)
    assert run.returncode == 0, run.output[-3000:]
    for name in ("point_0000", "point_0001"):
        folder = tmp_path / "results/tiny/phantoms"
        assert (folder / f"{name}.h5").is_file() and (folder / f"{name}.png").is_file()
        assert (folder / f"{name}_materials.mhd").is_file()
        assert (tmp_path / f"logs/phantom/tiny/{name}.log").is_file()
        listmode = read_listmode(tmp_path / f"results/tiny/listmode/{name}/paper.h5")
        assert listmode.attrs["engine"] == "fast" and listmode.attrs["acquisition"] == "paper"
        assert 0 < listmode.attrs["primaries"] < 200  # 600 Bq for 0.1 s: about 60 decays
        assert (tmp_path / f"logs/simulate/tiny/{name}/paper.log").is_file()
        # The reconstruction of every list-mode file, with its NIfTI copy and preview.
        rec = read_recon(tmp_path / f"results/tiny/recon/{name}/paper.h5")
        assert rec.image.shape == rec.grid.shape and rec.attrs["algorithm"] == "OSEM (2D SSRB)"
        assert rec.attrs["prompts"] == len(listmode)
        for suffix in (".nii.gz", ".png", "_defects.json"):
            assert (tmp_path / f"results/tiny/recon/{name}/paper{suffix}").is_file()
    assert (tmp_path / "results/tiny/recon/system_matrix_2d.h5").is_file()
    # Defect measures: point phantoms have none, so the CSV is its header alone.
    table = (tmp_path / "results/tiny/recon/detectability.csv").read_text().splitlines()
    assert table[0].startswith("phantom,acquisition,label,type,") and len(table) == 1
    assert (tmp_path / "results/tiny/recon/defects.png").stat().st_size > 0
    # The image sets: positron slices of both phantoms, synthetic CT labelled as such.
    with h5py.File(tmp_path / "results/tiny/datasets/positron.h5") as f:
        assert f["images"].shape[1:] == (16, 16)
        assert {p.decode() for p in f["phantom"][...]} == {"point_0000", "point_0001"}
    with h5py.File(tmp_path / "results/tiny/datasets/ct.h5") as f:
        assert f["images"].shape == (8, 16, 16) and f.attrs["synthetic"]
    for name in ("positron", "ct"):
        assert (tmp_path / f"results/tiny/datasets/{name}.png").is_file()
    # The generative stage: CT VAE, feature memory, the attention GAN and its samples.
    models = tmp_path / "results/tiny/models"
    for name in ("vae_ct/final.pt", "vae_ct/history.csv", "vae_ct/reconstructions.png",
                 "features.h5", "attention_gan/final.pt", "attention_gan/checkpoint.pt",
                 "attention_gan/history.csv", "attention_gan/samples.png",
                 "attention_gan/losses.png", "attention_gan/samples/step_000002.png"):
        assert (models / name).stat().st_size > 0, name
    assert len((models / "attention_gan/history.csv").read_text().splitlines()) == 1 + 3
    with h5py.File(tmp_path / "results/tiny/generated/attention_gan.h5") as f, h5py.File(
            tmp_path / "results/tiny/datasets/positron.h5") as p:
        assert f["images"].shape == (6, 16, 16) and f.attrs["method"] == "attention_gan"
        assert f.attrs["normalisation"] == p.attrs["normalisation"]
    for log in ("pretrain_vae/tiny.log", "positron_features/tiny.log",
                "train/tiny/attention_gan.log", "generate/tiny/attention_gan.log",
                "downstream/tiny.log"):
        assert (tmp_path / "logs" / log).is_file(), log
    # Labelled generation: classes with every conditional image, masks with mask-to-image
    # ones; the downstream test and Table 1's detector columns and per-class rows.
    with h5py.File(tmp_path / "results/tiny/generated/mask2image_patch.h5") as f:
        assert f["masks"].shape == (6, 16, 16) and f["labels"].shape == (6,)
    with h5py.File(tmp_path / "results/tiny/generated/dcgan_conditional.h5") as f:
        assert set(f["defect_class"].asstr()[...]) == {"none"}  # points have no defects
    downstream = (tmp_path / "results/tiny/eval/downstream.md").read_text()
    assert "| real + mask2image_patch |" in downstream and "vs real: p (verdict)" in downstream
    table = (tmp_path / "results/tiny/eval/table1.md").read_text()
    assert "detector AUC, real + generated" in table and "| dcgan_conditional | none |" in table
    assert (tmp_path / "results/tiny/eval/class_walks.png").stat().st_size > 0
    # One acquisition: no pairs, so no enhancement job.
    assert not (tmp_path / "results/tiny/enhance").exists()
    assert not list((tmp_path / "results").rglob("*.tmp"))

    # The cross-check runs on request only, through the engine named in the path.
    run = _snakemake("engine_crosscheck", "--cores", "1", "--configfile", str(overlay),
                     cwd=tmp_path)
    assert run.returncode == 0, run.output[-3000:]
    table = (tmp_path / "results/tiny/crosscheck/point_0001/paper/fast_vs_fast/crosscheck.md")
    assert "| prompts per 1000 decays |" in table.read_text()
    assert (table.parent / "crosscheck.png").is_file()

    # So does the engine validation: the detector response, two realisations of each engine,
    # their reconstructions, the phantom's table and the summary.
    run = _snakemake("statistical_validation", "--cores", "2", "--configfile", str(overlay),
                     cwd=tmp_path)
    assert run.returncode == 0, run.output[-3000:]
    folder = tmp_path / "results/tiny/validation/point_0000/paper"
    for engine in ("fast", "statistical"):
        for k in (0, 1):
            listmode = read_listmode(folder / f"{engine}/listmode_r{k}.h5")
            assert listmode.attrs["engine"] == engine
            assert (folder / f"{engine}/recon_r{k}_defects.json").is_file()
    seeds = {read_listmode(folder / f"fast/listmode_r{k}.h5").attrs["seed"] for k in (0, 1)}
    assert len(seeds) == 2  # independent realisations
    assert "| prompts per decay |" in (folder / "fast_vs_statistical/validation.md").read_text()
    summary = (tmp_path / "results/validation/statistical.md").read_text()
    assert "| tiny/point_0000 |" in summary

    # And the detectability study: every phantom thinned to each level and reconstructed.
    run = _snakemake("detectability_study", "--cores", "2", "--configfile", str(overlay),
                     cwd=tmp_path)
    assert run.returncode == 0, run.output[-3000:]
    for k, fraction in enumerate((0.5, 1.0)):
        for name in ("point_0000", "point_0001"):
            thinned = read_listmode(
                tmp_path / f"results/tiny/detectability/l{k}/listmode/{name}/paper.h5")
            source = read_listmode(tmp_path / f"results/tiny/listmode/{name}/paper.h5")
            assert thinned.attrs["thinned_fraction"] == fraction
            assert len(thinned) <= len(source) and (k == 0 or len(thinned) == len(source))
            rec = read_recon(tmp_path / f"results/tiny/detectability/l{k}/recon/{name}/paper.h5")
            assert rec.attrs["prompts"] == len(thinned)
    study = tmp_path / "results/detectability"
    # Point phantoms carry no defects: the tables hold their headers alone.
    assert (study / "study.csv").read_text().startswith("dataset,phantom,level,fraction,")
    assert len((study / "smallest.csv").read_text().splitlines()) == 1
    assert "# Detectability study" in (study / "study.md").read_text()
    assert (study / "study.png").stat().st_size > 0


@pytest.mark.slow
def test_the_example_part_overlay_runs_its_phantom_rule_and_tracks_the_meshes(tmp_path):
    """`config/parts.yaml`'s phantom jobs read the example meshes through the rule's input,
    so editing a mesh re-runs the phantoms that use it."""
    copy_workflow(tmp_path)
    target = "results/block/phantoms/part_0000.h5"
    run = _snakemake(target, "--cores", "1", "--configfile", "config/parts.yaml", cwd=tmp_path)
    assert run.returncode == 0, run.output[-3000:]
    with h5py.File(tmp_path / target) as f:
        assert f.attrs["family"] == "part"
        assert f["labels"][...].max() >= 1  # the block's defects are in the label map
        assert f["activity"][...].sum() == pytest.approx(1.0, abs=1e-4)
    edited = tmp_path / "examples/parts/drilled_block_channel_a.obj"
    edited.write_text(edited.read_text() + "# edited\n")  # Snakemake compares checksums
    dry = _snakemake("--cores", "1", "--configfile", "config/parts.yaml", "--dry-run",
                     "--quiet", "rules", cwd=tmp_path)
    assert dry.returncode == 0, dry.output[-3000:]
    counts = {line.split()[0]: line.split()[1] for line in dry.stdout.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert counts["phantom"] == "6"  # 3 elbows never built + 3 blocks (one of them updated)
    reason = _snakemake(target, "--cores", "1", "--configfile", "config/parts.yaml",
                        "--dry-run", cwd=tmp_path)
    assert "Updated input files: examples/parts/drilled_block_channel_a.obj" in reason.output


@pytest.mark.slow
def test_keep_listmode_false_deletes_list_mode_once_reconstructed(tmp_path):
    copy_workflow(tmp_path)
    overlay = tmp_path / "tiny.yaml"
    overlay.write_text(
        "run_datasets: [tiny]\nkeep_listmode: false\npositron_images: {low_count: paper}\n"
        "datasets:\n  tiny:\n    family: point\n    n_phantoms: 1\n    acquisitions: [paper]\n"
        "    grid: {shape: [8, 16, 16], voxel_size_mm: [1.0, 1.0, 1.0]}\n")
    target = "results/tiny/recon/point_0000/paper.h5"
    run = _snakemake("--cores", "1", target, "--configfile", str(overlay), cwd=tmp_path)
    assert run.returncode == 0, run.output[-3000:]
    assert read_recon(tmp_path / target).attrs["prompts"] >= 0
    assert not (tmp_path / "results/tiny/listmode/point_0000/paper.h5").exists()
    # Kept by default: the same run without the switch leaves the file.
    overlay.write_text(overlay.read_text().replace("keep_listmode: false\n", ""))
    (tmp_path / target).unlink()
    run = _snakemake("--cores", "1", target, "--configfile", str(overlay), cwd=tmp_path)
    assert run.returncode == 0, run.output[-3000:]
    assert (tmp_path / "results/tiny/listmode/point_0000/paper.h5").is_file()
