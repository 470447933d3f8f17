"""``python -m grader slurm CLASS``: grade a class on a Slurm cluster, past one machine.

Writes ``OUT/slurm/``: ``manifest.jsonl`` (each submission's output name, grade key and path, one
JSON object a line, so that no name, whatever characters it holds, can split or add a line),
``grade.sbatch`` (a job array: each task grades a chunk of submissions into ``OUT/<name>/``, as
``make grade`` does, skipping those unchanged since the last run) and ``merge.sbatch`` (run after
the array, whatever its tasks did: ``OUT/gradebook.csv`` and ``OUT/index.html``; a submission
whose task did not finish gets a row that says so). ``--submit`` submits both (``sbatch``, the
merge job with ``--dependency=afterany``); ``--wait`` waits for the merge job.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from grader.batch import (Row, grade_entry, grade_key, is_class_folder, kit_version, reused_row, rubric_total, saved_row,
                          submission_entries, unique_names, write_gradebook, write_index)
from grader.grade import GradeOptions, missing_data
from grader.rubric import load_rubric

GRADE_OPTIONS = ("training", "device", "seed", "data_dir", "rubric", "time_limit", "course")
MANIFEST = "manifest.jsonl"
MANIFEST_FIELDS = ("index", "name", "key", "path")


def _options(args: argparse.Namespace, threads: int | None = None) -> GradeOptions:
    return GradeOptions(training=args.training, device=args.device, seed=args.seed or 0, data_dir=args.data_dir,
                        rubric=args.rubric, time_limit=args.time_limit, threads=threads,
                        allow_unisolated=args.allow_unisolated, course=str(args.course) if args.course else None)


def _flags(args: argparse.Namespace) -> list[str]:
    """The grading options again, as the tasks' command line."""
    flags = []
    for name in GRADE_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            flags += [f"--{name.replace('_', '-')}", str(Path(value).resolve()) if name in ("data_dir", "rubric", "course") else str(value)]
    if args.allow_unisolated:
        flags.append("--allow-unisolated")
    return flags


@dataclass(frozen=True)
class ManifestEntry:
    """One submission of a Slurm batch: its place, output folder name, grade key and path."""

    index: int
    name: str
    key: str
    path: Path


class ManifestError(Exception):
    """The manifest is not what ``write_manifest`` wrote: the tasks and the merge stop, saying where."""


def write_manifest(path: Path, entries: list[ManifestEntry]) -> None:
    """One JSON object a line: JSON writes every newline, CR and tab inside a name as an escape (and
    everything past ASCII too), so a student's name is data in its line and never adds, splits or
    replaces one."""
    lines = [json.dumps({"index": e.index, "name": e.name, "key": e.key, "path": str(e.path)}) for e in entries]
    path.write_text("".join(line + "\n" for line in lines), encoding="ascii")


def is_output_name(name: str) -> bool:
    """Whether ``name`` is one folder inside OUT: not empty, ``.``, ``..``, nor holding a ``/`` or a NUL."""
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def _manifest_entry(line: str, index: int) -> ManifestEntry:
    """Line ``index`` (from 0) of the manifest, validated; a ValueError says what is wrong with it."""
    try:
        fields = json.loads(line)
    except ValueError as e:
        raise ValueError(f"not a JSON object ({e})") from None
    if not isinstance(fields, dict) or sorted(fields) != sorted(MANIFEST_FIELDS):
        raise ValueError(f"not an object with exactly the fields {', '.join(MANIFEST_FIELDS)}")
    if type(fields["index"]) is not int or fields["index"] != index:
        raise ValueError(f"index {fields['index']!r} where {index} belongs (lines were added, removed or moved)")
    if not isinstance(fields["name"], str) or not is_output_name(fields["name"]):
        raise ValueError(f"name {fields['name']!r} is not one folder name inside the output folder")
    if not isinstance(fields["key"], str):
        raise ValueError(f"key {fields['key']!r} is not a string")
    if not isinstance(fields["path"], str) or not Path(fields["path"]).is_absolute():
        raise ValueError(f"path {fields['path']!r} is not an absolute path")
    return ManifestEntry(index, fields["name"], fields["key"], Path(fields["path"]))


def read_manifest(path: Path) -> list[ManifestEntry]:
    """Every entry of the manifest, each line validated; a ManifestError names the manifest and the
    line, and tells the instructor to write the jobs again rather than mend the file."""
    again = "write the jobs again with `python -m grader slurm CLASS --out OUT` rather than editing it"
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"cannot read the manifest {path} ({e}): {again}") from None
    lines = text.split("\n")
    if lines[-1] != "":
        raise ManifestError(f"{path}: line {len(lines)} is cut short (no newline at its end): {again}")
    entries = []
    for number, line in enumerate(lines[:-1], start=1):
        try:
            entries.append(_manifest_entry(line, number - 1))
        except ValueError as e:
            raise ManifestError(f"{path}: line {number}: {e}: {again}") from None
    return entries


def write_jobs(args: argparse.Namespace, paths: list[Path], out: Path) -> tuple[Path, Path]:
    """manifest.jsonl, grade.sbatch and merge.sbatch in ``out/slurm/``."""
    folder = out / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    kit, options = kit_version(), _options(args)  # not resolved here: the login node may have no GPU
    manifest = folder / MANIFEST
    write_manifest(manifest, [ManifestEntry(i, name, grade_key(path, options, kit), path.resolve())
                              for i, (name, path) in enumerate(zip(unique_names(paths), paths))])
    tasks = math.ceil(len(paths) / args.chunk)
    python, flags = shlex.quote(sys.executable), " ".join(shlex.quote(f) for f in _flags(args))
    resources = [f"#SBATCH --cpus-per-task={args.cpus_per_task}"]
    resources += [f"#SBATCH --gpus={args.gpus}"] if args.gpus else []
    resources += [f"#SBATCH --partition={args.partition}"] if args.partition else []
    resources += [f"#SBATCH --time={args.time}"] if args.time else []
    resources += [f"#SBATCH --mem={args.mem}"] if args.mem else []
    grade = folder / "grade.sbatch"
    grade.write_text("\n".join([
        "#!/bin/bash", "#SBATCH --job-name=vitkit-grade", f"#SBATCH --array=0-{tasks - 1}", *resources,
        f"#SBATCH --output={folder}/task-%a.log",
        f"# {len(paths)} submissions, {args.chunk} per task; each task grades its chunk into {out}/<name>/",
        f'exec {python} -m grader.slurm task {shlex.quote(str(manifest))} --index "$SLURM_ARRAY_TASK_ID" '
        f"--chunk {args.chunk} --out {shlex.quote(str(out))} {flags}", ""]))
    merge = folder / "merge.sbatch"
    merge.write_text("\n".join([
        "#!/bin/bash", "#SBATCH --job-name=vitkit-merge", "#SBATCH --cpus-per-task=1",
        *([f"#SBATCH --partition={args.partition}"] if args.partition else []), f"#SBATCH --output={folder}/merge.log",
        f"exec {python} -m grader.slurm merge {shlex.quote(str(manifest))} --chunk {args.chunk} --out {shlex.quote(str(out))} {flags}",
        ""]))
    return grade, merge


def _sbatch(*args: str) -> str:
    """``sbatch --parsable ARGS``: the job id; a SystemExit with sbatch's own words otherwise."""
    try:
        done = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise SystemExit("error: sbatch not found: run this on a Slurm login node, or without --submit and "
                         "submit the scripts there") from None
    if done.returncode != 0:
        raise SystemExit(f"error: sbatch failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip().split(";")[0]


def submit_main(args: argparse.Namespace) -> int:
    path = args.klass
    if not path.is_dir():
        print(f"error: {path} is not a folder of submissions", file=sys.stderr)
        return 2
    paths = submission_entries(path) if is_class_folder(path) else [path]
    out = (args.out or Path("grades")).resolve()
    if args.seed is None:
        from grader.__main__ import deployment_seed

        args.seed = deployment_seed()
    missing = missing_data(_options(args))  # said now, on the login node, not by every task
    if missing:
        print(f"error: --training {args.training} needs data that is missing; no job was written.\n" + "\n".join(missing),
              file=sys.stderr)
        return 2
    grade, merge = write_jobs(args, paths, out)
    print(f"wrote {grade} and {merge} for {len(paths)} submissions")
    if not args.submit:
        print(f"submit them with: job=$(sbatch --parsable {grade}); sbatch --dependency=afterany:$job {merge}")
        return 0
    job = _sbatch(str(grade))
    merged = _sbatch(f"--dependency=afterany:{job}", *(["--wait"] if args.wait else []), str(merge))
    print(f"submitted: grading job {job} (array), merge job {merged}; the gradebook will be {out / 'gradebook.csv'}")
    return 0


def task_main(args: argparse.Namespace) -> int:
    """One array task: its chunk of the manifest, graded (or skipped when unchanged)."""
    entries = read_manifest(args.manifest)[args.index * args.chunk:(args.index + 1) * args.chunk]
    threads = int(os.environ.get("SLURM_CPUS_PER_TASK", "0")) or None  # the task's share of its node
    options = _options(args, threads).resolved()
    total = rubric_total(load_rubric(args.rubric, args.course), args.training)
    for entry in entries:
        name, out_dir = entry.name, args.out / entry.name
        if not args.force and reused_row(out_dir, entry.key) is not None:
            print(f"{name!r}: unchanged since the last run", flush=True)
            continue
        row = grade_entry(entry.path, out_dir, name, options, total, entry.key)
        print(f"{name!r}: {row.score:g} / {row.max_score:g} {row.status}", flush=True)
    return 0


def merge_main(args: argparse.Namespace) -> int:
    """After the array: the gradebook and the index page from every submission's saved row."""
    rows = []
    for entry in read_manifest(args.manifest):
        row = saved_row(args.out / entry.name, entry.key)
        rows.append(dataclasses.replace(row, reused=False) if row is not None else
                    Row(entry.name, "grader-error", message=f"no signed result: its Slurm task did not finish (see slurm/task-{entry.index // args.chunk}.log), "
                                                 "or the nodes do not share ~/.cache/vitkit with this one"))
    write_gradebook(rows, args.out)
    write_index(rows, args.out)
    print(f"{len(rows)} rows in {args.out / 'gradebook.csv'} ({sum(r.status == 'grader-error' for r in rows)} not graded)")
    return 0


def main(argv: list[str] | None = None) -> int:
    from grader.__main__ import add_grading_options, read_settings

    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m grader slurm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_grading_options(parser)
    if argv[:1] in (["task"], ["merge"]):  # the steps the scripts run on the cluster
        parser.add_argument("step", choices=("task", "merge"))
        parser.add_argument("manifest", type=Path)
        parser.add_argument("--index", type=int, default=0)
        parser.add_argument("--chunk", type=int, default=1)
        parser.add_argument("--force", action="store_true")
        args = parser.parse_args(argv)
        args.out = args.out.resolve()
        problem = read_settings(args)
        if problem:
            print(problem, file=sys.stderr)
            return 2
        try:
            return task_main(args) if args.step == "task" else merge_main(args)
        except ManifestError as e:  # a broken manifest: said in one line, in the task's or the merge's log
            print(f"error: {e}", file=sys.stderr)
            return 2
    parser.add_argument("klass", type=Path, metavar="CLASS", help="a folder with one submission per entry")
    parser.add_argument("--chunk", type=int, default=1, help="submissions per array task (default 1)")
    parser.add_argument("--cpus-per-task", type=int, default=2)
    parser.add_argument("--gpus", type=int, default=0, help="GPUs per task (--device cuda trains there)")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--time", default=None, help="Slurm time limit per task, e.g. 00:30:00")
    parser.add_argument("--mem", default=None, help="memory per task, e.g. 16G")
    parser.add_argument("--submit", action="store_true", help="submit the jobs with sbatch")
    parser.add_argument("--wait", action="store_true", help="with --submit: return when the gradebook is written")
    args = parser.parse_args(argv)
    if args.chunk < 1 or args.cpus_per_task < 1:
        parser.error("--chunk and --cpus-per-task must be at least 1")
    problem = read_settings(args)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    return submit_main(args)


if __name__ == "__main__":
    sys.exit(main())
