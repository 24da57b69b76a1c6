"""Propose each rule's ``mem_mb``, ``runtime`` and ``threads`` from the ``benchmark:`` files of
a measured run, beside what the rules declare now.

Snakemake writes one TSV per job under ``benchmarks/out/{rule}/...`` (wall time ``s``, peak
``max_rss`` in MB, ``cpu_time`` in s). Per rule, over its jobs: memory = 1.5 x the largest
peak, rounded up to 500 MB; runtime = 3 x the longest wall time, rounded up to 5 minutes (a
cluster kills a job at its limit: the margin covers slower nodes and bigger phantoms).
Threads stay as declared: the cores a job kept busy (``cpu_time / s``, printed) measure the
machine as much as the job when jobs run side by side (on 2 cores, two 2-thread jobs get
one core each), and Snakemake samples ``cpu_time`` only every few seconds. The declared
values are read from ``workflow/rules/*.smk`` (a function, such as the phantom job's
grid-scaled memory, is shown by name). The proposals are printed as a table and as a
``set-resources:`` block for a Snakemake profile.

Run after a run that kept its benchmarks (``make run``):
``python benchmarks/propose_resources.py [--benchmarks benchmarks/out] [--export jobs.tsv]``.
The scaled requests of the rules (``pipeline/job_resources.py``) are fitted to such runs.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measured(folder: Path) -> dict[str, dict[str, float]]:
    """Per rule (first folder level): jobs, longest wall time s, largest peak RSS MB, mean
    cores busy."""
    out: dict[str, dict[str, float]] = {}
    for path in sorted(folder.rglob("*.tsv")):
        rule = path.relative_to(folder).parts[0]
        with open(path) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        for row in rows:
            seconds = float(row["s"])
            entry = out.setdefault(rule, {"jobs": 0, "s": 0.0, "rss_mb": 0.0, "busy": []})
            entry["jobs"] += 1
            entry["s"] = max(entry["s"], seconds)
            entry["rss_mb"] = max(entry["rss_mb"], float(row["max_rss"]))
            if seconds > 1 and row.get("cpu_time") not in (None, "", "NA"):
                entry["busy"].append(float(row["cpu_time"]) / seconds)
    for entry in out.values():
        busy = entry.pop("busy")
        entry["cores_busy"] = sum(busy) / len(busy) if busy else 0.0
    return out


def export_jobs(folder: Path, out: Path) -> int:
    """Write every measured job (rule, job path, wall s, peak MB) to ``out`` (TSV): the table
    ``tests/pipeline/test_job_resources.py`` checks the scaled requests against."""
    rows = []
    for path in sorted(folder.rglob("*.tsv")):
        with open(path) as fh:
            last = list(csv.DictReader(fh, delimiter="\t"))[-1]
        job = path.relative_to(folder).with_suffix("")
        rows.append(f"{job.parts[0]}\t{'/'.join(job.parts[1:])}\t{float(last['s']):.2f}\t"
                    f"{float(last['max_rss']):.1f}")
    out.write_text("rule\tjob\ts\tmax_rss_mb\n" + "\n".join(rows) + "\n")
    return len(rows)


def declared(rules_dir: Path) -> dict[str, dict[str, str]]:
    """Per rule: threads, mem_mb and runtime as written in the rule files."""
    out = {}
    for path in sorted(rules_dir.glob("*.smk")):
        for block in re.split(r"^rule ", path.read_text(), flags=re.M)[1:]:
            name = block.split(":", 1)[0].strip()
            values = {}
            for key, pattern in (("threads", r"^\s+threads: (\S+)"),
                                 ("mem_mb", r"^\s+mem_mb=([^,\n]+)"),
                                 ("runtime", r"^\s+runtime=([^,\n]+)")):
                found = re.search(pattern, block, re.M)
                values[key] = found.group(1) if found else "-"
            out[name] = values
    return out


def propose(entry: dict[str, float]) -> dict[str, int]:
    """The proposal for one rule (module docstring)."""
    return {"mem_mb": 500 * math.ceil(1.5 * entry["rss_mb"] / 500),
            "runtime": 5 * math.ceil(3 * entry["s"] / 60 / 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmarks", type=Path, default=REPO / "benchmarks" / "out")
    parser.add_argument("--export", type=Path, default=None,
                        help="also write every measured job to this TSV")
    args = parser.parse_args()
    runs = measured(args.benchmarks)
    if args.export is not None:
        print(f"{export_jobs(args.benchmarks, args.export)} jobs written to {args.export}")
    if not runs:
        raise SystemExit(f"{args.benchmarks}: no benchmark files (run the workflow first)")
    rules = declared(REPO / "workflow" / "rules")
    print(f"{'rule':22s} {'jobs':>4s} {'max s':>7s} {'max MB':>7s} {'cores':>5s}   "
          f"{'declared threads / mem_mb / runtime':36s} proposed mem_mb / runtime")
    proposals = {}
    for rule, entry in sorted(runs.items()):
        now = rules.get(rule, {"threads": "-", "mem_mb": "-", "runtime": "-"})
        proposals[rule] = p = propose(entry)
        print(f"{rule:22s} {entry['jobs']:4d} {entry['s']:7.1f} {entry['rss_mb']:7.0f} "
              f"{entry['cores_busy']:5.2f}   "
              f"{now['threads'] + ' / ' + now['mem_mb'] + ' / ' + now['runtime']:36s} "
              f"{p['mem_mb']} / {p['runtime']}")
    print("\nset-resources:")
    for rule, p in sorted(proposals.items()):
        print(f"  {rule}:\n    mem_mb: {p['mem_mb']}\n    runtime: {p['runtime']}")


if __name__ == "__main__":
    main()
