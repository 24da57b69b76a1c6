"""The workflow submitted to a real Slurm cluster through `profiles/slurm` (`make
cluster-test` starts a one-node cluster from Debian's packages, then runs this file).

What is checked comes from Slurm's own records, not from Snakemake's: every job Snakemake
submitted has a completion record (jobcomp/filetxt, configured by
`profiles/slurm/local/start.sh`) with state COMPLETED, the CPUs its rule's `threads`, the
memory its `mem_mb` and the time limit its `runtime` declare; and the dataset's outputs exist
and read back. Skipped, with the reason, where no Slurm node or no executor plugin is there.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from tests.workflow.sandbox import copy_workflow

pytestmark = pytest.mark.cluster


def _not_ready() -> str | None:
    """Why the cluster test cannot run here, or None."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no Slurm client (run `make cluster-test`, which installs and starts one)"
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if states.returncode or not re.search(r"idle|mixed|allocated", states.stdout):
        return "no Slurm node up (profiles/slurm/local/start.sh starts one)"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "the Slurm executor plugin is not installed (pip install -e '.[slurm]')"
    if _jobcomp_log() is None:
        return "the cluster keeps no job-completion log (JobCompType=jobcomp/filetxt)"
    return None


def _jobcomp_log() -> Path | None:
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True)
    kind = re.search(r"^JobCompType\s*=\s*(\S+)", config.stdout, re.M)
    where = re.search(r"^JobCompLoc\s*=\s*(\S+)", config.stdout, re.M)
    if kind is None or kind.group(1) != "jobcomp/filetxt" or where is None:
        return None
    return Path(where.group(1))


def _completion_records(path: Path) -> dict[int, dict[str, str]]:
    """Slurm's job-completion log: job id -> its fields (``key=value`` on one line)."""
    records = {}
    for line in path.read_text().splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobId" in fields:
            records[int(fields["JobId"])] = fields
    return records


def _submitted_jobs(output: str) -> list[dict]:
    """From Snakemake's log: per submitted job, its rule, threads, mem_mb, runtime and the
    Slurm job id."""
    blocks = {}
    for block in re.split(r"\n(?=\[\w{3} \w{3} )", output):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        jobid = re.search(r"^\s+jobid: (\d+)", block, re.M)
        if rule and jobid:
            resources = re.search(r"^\s+resources: (.*)$", block, re.M).group(1)
            threads = re.search(r"^\s+threads: (\d+)", block, re.M)
            blocks[int(jobid.group(1))] = {
                "rule": rule.group(1),
                "threads": int(threads.group(1)) if threads else 1,
                "mem_mb": int(re.search(r"\bmem_mb=(\d+)", resources).group(1)),
                "runtime": int(re.search(r"\bruntime=(\d+)", resources).group(1)),
            }
    jobs = []
    for job, slurm_id in re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)",
                                    output):
        jobs.append({**blocks[int(job)], "slurm_id": int(slurm_id)})
    return jobs


def test_small_dataset_runs_through_slurm_with_the_declared_resources(tmp_path):
    reason = _not_ready()
    if reason:
        pytest.skip(reason)
    copy_workflow(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "--profile", "profiles/slurm",
         "--slurm-status-command", "squeue", "--configfile", "config/cluster_test.yaml"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    jobs = _submitted_jobs(output)
    # Every job but the local target `all` went through the scheduler.
    planned = re.search(r"^total\s+(\d+)$", output, re.M)
    assert planned and len(jobs) == int(planned.group(1)) - 1, output[-4000:]
    records = _completion_records(_jobcomp_log())
    for job in jobs:
        record = records.get(job["slurm_id"])
        assert record is not None, f"{job}: no Slurm completion record"
        assert record["JobState"] == "COMPLETED", (job, record)
        assert Path(record["WorkDir"]) == tmp_path, (job, record)
        tres = dict(item.split("=") for item in record["Tres"].split(","))
        assert int(tres["cpu"]) == job["threads"], (job, record)
        assert tres["mem"] == f"{job['mem_mb']}M", (job, record)
        assert int(record["TimeLimit"]) == job["runtime"], (job, record)
    rules = {job["rule"] for job in jobs}
    assert {"phantom", "simulate", "reconstruct", "positron_dataset"} <= rules, rules
    with h5py.File(tmp_path / "results/cluster/datasets/positron.h5") as f:
        assert f["images"].shape[0] > 0
    print(f"{len(jobs)} Slurm jobs: " + ", ".join(
        f"{job['rule']} {job['threads']} CPU {job['mem_mb']} MB {job['runtime']} min"
        for job in jobs))
