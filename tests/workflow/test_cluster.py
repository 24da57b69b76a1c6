"""The workflow submitted to a real Slurm cluster through `profiles/slurm` (`make
cluster-test` starts a private one-node cluster from Debian's packages, with its own config,
munge key and ports in its state folder, then runs this file with SLURM_CONF set to that
config: every Slurm command here and in the executor plugin talks to it, never to a Slurm of
the machine's; the jobs' own srun, which Snakemake's jobstep executor runs without
SLURM_CONF, is the private cluster's `bin/srun`, first on the PATH they inherit).

What is checked comes from Slurm's own records, not from Snakemake's: every job Snakemake
submitted (one per phantom for its phantom, simulate and reconstruct jobs, grouped by the
profile, and one per gathering job) has a completion record (jobcomp/filetxt, configured by
`profiles/slurm/local/start.sh`) with state COMPLETED, the CPUs its rule's `threads`, the
memory its `mem_mb` and the time limit its `runtime` declare (for a group, what its members
declare, run in series); and the dataset's outputs exist and read back. Then the private
cluster is stopped and started again with a system Slurm config present (a dummy one written
for the test where the machine has none): /etc/slurm and /etc/munge are as they were found.
Skipped, with the reason, where no private Slurm node or no executor plugin is there.
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

from tests.workflow.sandbox import REPO, copy_workflow
from tests.workflow.test_local_slurm import SYSTEM_PATHS, _snapshot

# A cluster run of a dataset takes 8 to 15 minutes on 2 cores: more than the suite's timeout.
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(3600)]

LOCAL = REPO / "profiles/slurm/local"
HOW_TO_START = ("run `make cluster-test`, or start the private cluster with "
                "profiles/slurm/local/start.sh (as root) and export "
                "SLURM_CONF=/var/tmp/positron-nde-slurm/slurm.conf (or "
                "$SLURM_LOCAL_STATE/slurm.conf)")


def _not_ready() -> str | None:
    """Why the cluster test cannot run here, or None. The Slurm commands (sinfo, scontrol,
    and the plugin's sbatch, squeue, scancel) find the private cluster through SLURM_CONF."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no Slurm client (run `make cluster-test`, which installs and starts one)"
    conf = os.environ.get("SLURM_CONF")
    if not conf or not Path(conf).is_file():
        return f"SLURM_CONF names no private cluster's config: {HOW_TO_START}"
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if states.returncode or not re.search(r"idle|mixed|allocated", states.stdout):
        return f"no Slurm node up in the cluster of SLURM_CONF={conf}: {HOW_TO_START}"
    if not (_private_bin() / "srun").is_file():
        return f"no srun of the private cluster in {_private_bin()}: {HOW_TO_START}"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "the Slurm executor plugin is not installed (pip install -e '.[slurm]')"
    if _jobcomp_log() is None:
        return "the cluster keeps no job-completion log (JobCompType=jobcomp/filetxt)"
    return None


def _private_bin() -> Path:
    """The private cluster's srun (start.sh writes it): inside a job, Snakemake's jobstep
    executor runs srun without SLURM_CONF, and this srun sets it back (start.sh says why)."""
    return Path(os.environ["SLURM_CONF"]).parent / "bin"


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


def _member(block: str) -> dict | None:
    """A job block of Snakemake's log: rule, jobid, threads, mem_mb and runtime."""
    rule = re.search(r"^\s*(?:local)?rule (\w+):", block, re.M)
    jobid = re.search(r"^\s+jobid: (\d+)", block, re.M)
    if not (rule and jobid):
        return None
    resources = re.search(r"^\s+resources: (.*)$", block, re.M).group(1)
    threads = re.search(r"^\s+threads: (\d+)", block, re.M)
    return {"rule": rule.group(1), "jobid": int(jobid.group(1)),
            "threads": int(threads.group(1)) if threads else 1,
            "mem_mb": int(re.search(r"\bmem_mb=(\d+)", resources).group(1)),
            "runtime": int(re.search(r"\bruntime=(\d+)", resources).group(1))}


def _submissions(output: str) -> list[dict]:
    """From Snakemake's log: every Slurm submission with its Slurm job id and its members
    (one job, or the jobs of a group), each with its rule's threads, mem_mb and runtime."""
    singles: dict[int, dict] = {}
    groups: list[list[dict]] = []
    in_group = False
    for block in re.split(r"\n(?=\s*\[\w{3} \w{3} )", output):
        if re.search(r"\] Group job \S+ \(jobs", block):
            groups.append([])
            in_group = True
            continue
        member = _member(block)
        if member is None:
            continue
        if block.startswith((" ", "\n ")) and in_group:  # group members are indented
            groups[-1].append(member)
        else:
            in_group = False
            singles[member["jobid"]] = member
    submitted, group_index = [], 0
    for key, slurm_id in re.findall(r"Job (\S+) has been submitted with SLURM jobid (\d+)",
                                    output):
        if key.isdigit():
            members = [singles[int(key)]]
        else:  # a group's id; groups are submitted in the order they are printed
            members, group_index = groups[group_index], group_index + 1
        submitted.append({"slurm_id": int(slurm_id), "members": members})
    return submitted


def test_small_dataset_runs_through_slurm_with_the_declared_resources(tmp_path):
    reason = _not_ready()
    if reason:
        pytest.skip(reason)
    copy_workflow(tmp_path)
    # The jobs inherit this PATH (sbatch --export=ALL): the private cluster's srun first.
    env = {**os.environ, "PATH": os.pathsep.join(
        [str(Path(sys.executable).parent), str(_private_bin()), os.environ["PATH"]])}
    # --cores 2: a group job must fit a 2-CPU node, so Snakemake runs its members one after
    # the other (2 threads each but the phantom's): its request is then the largest threads
    # and memory of its members and the sum of their runtimes.
    run = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "--profile", "profiles/slurm",
         "--slurm-status-command", "squeue", "--cores", "2", "--configfile",
         "config/cluster_test.yaml"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    submitted = _submissions(output)
    # Every job but the local target `all` went through the scheduler, each exactly once.
    planned = re.search(r"^total\s+(\d+)$", output, re.M)
    members = [m for job in submitted for m in job["members"]]
    assert planned and len(members) == int(planned.group(1)) - 1, output[-4000:]
    assert len({m["jobid"] for m in members}) == len(members)
    # One group job per phantom: its phantom, 2 simulations and 2 reconstructions.
    groups = [job for job in submitted if len(job["members"]) > 1]
    assert len(groups) == 3 and all(
        sorted(m["rule"] for m in job["members"]) ==
        ["phantom", "reconstruct", "reconstruct", "simulate", "simulate"] for job in groups)
    records = _completion_records(_jobcomp_log())
    for job in submitted:
        record = records.get(job["slurm_id"])
        assert record is not None, f"{job}: no Slurm completion record"
        assert record["JobState"] == "COMPLETED", (job, record)
        assert Path(record["WorkDir"]) == tmp_path, (job, record)
        tres = dict(item.split("=") for item in record["Tres"].split(","))
        assert int(tres["cpu"]) == max(m["threads"] for m in job["members"]), (job, record)
        assert tres["mem"] == f"{max(m['mem_mb'] for m in job['members'])}M", (job, record)
        assert int(record["TimeLimit"]) == sum(m["runtime"] for m in job["members"]), \
            (job, record)
    with h5py.File(tmp_path / "results/cluster/datasets/positron.h5") as f:
        assert f["images"].shape[0] > 0
    for job in submitted:
        record = records[job["slurm_id"]]
        print(f"Slurm job {job['slurm_id']}: {'+'.join(m['rule'] for m in job['members'])}, "
              f"{record['Tres']}, time limit {record['TimeLimit']} min, "
              f"ran {record['StartTime']} to {record['EndTime']}")


DUMMY_SYSTEM_CONF = """\
# A dummy system Slurm config, written by tests/workflow/test_cluster.py for the length of
# one test (the private cluster must leave it byte-identical) and removed after it.
ClusterName=not-positron-nde
SlurmctldHost=system-controller
"""


def test_a_restart_leaves_the_system_slurm_config_as_it_found_it():
    """stop.sh then start.sh on the private cluster with a system Slurm config present (the
    machine's own, else a dummy written here): /etc/slurm and /etc/munge are as found, and
    the Slurm commands still answer from the private config. Leaves the cluster up."""
    reason = _not_ready()
    if reason:
        pytest.skip(reason)
    if os.geteuid() != 0:
        pytest.skip("start.sh and stop.sh run as root")
    private_conf = Path(os.environ["SLURM_CONF"])
    env = {**os.environ, "SLURM_LOCAL_STATE": str(private_conf.parent)}
    system_conf = Path("/etc/slurm/slurm.conf")
    written = []  # what this test created, removed after it (only these)
    if not system_conf.exists():
        if not system_conf.parent.exists():
            system_conf.parent.mkdir()
            written.append(system_conf.parent)
        system_conf.write_text(DUMMY_SYSTEM_CONF)
        written.insert(0, system_conf)
    try:
        before = _snapshot(*SYSTEM_PATHS)
        stop = subprocess.run([str(LOCAL / "stop.sh")], env=env, capture_output=True,
                              text=True, timeout=120)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert "stopped slurmctld" in stop.stdout and "stopped munged" in stop.stdout, \
            stop.stdout
        start = subprocess.run([str(LOCAL / "start.sh")], env=env, capture_output=True,
                               text=True, timeout=300)
        assert start.returncode == 0 and "Slurm up" in start.stdout, \
            start.stdout + start.stderr
        assert _snapshot(*SYSTEM_PATHS) == before
        config = subprocess.run(["scontrol", "show", "config"], capture_output=True,
                                text=True, check=True).stdout
        assert re.search(rf"^SLURM_CONF\s*=\s*{re.escape(str(private_conf))}$", config, re.M)
        assert not re.search(r"^SlurmctldPort\s*=\s*6817$", config, re.M), config
        print(f"{system_conf} and the rest of /etc/slurm, /etc/munge as found after "
              f"stop.sh and start.sh ({len(before)} entries)")
    finally:
        for path in written:
            if path == system_conf and path.read_text() == DUMMY_SYSTEM_CONF:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
