"""python -m grader slurm: a class graded as a Slurm job array and a merge job, on a real
one-node cluster (Debian's slurm-wlm and munge, started here; skipped, saying why, where they
cannot be installed or started), and its scripts, tasks and merge without one."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from grader import __main__ as cli
from grader.slurm import MANIFEST, ManifestEntry, ManifestError, read_manifest, write_manifest
from tests.grader.test_batch import ALTERNATIVE, gradebook, reference_copy

pytestmark = pytest.mark.integration  # the tier `make test-fast` leaves out (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def klass(tmp_path: Path) -> Path:
    root = tmp_path / "class"
    for student in ("alice", "erin"):
        reference_copy(root / student)
    (root / "bob.py").write_text(ALTERNATIVE.read_text())
    (root / "carol.zip").write_bytes(b"not a zip" * 10)
    return root


def test_the_scripts_ask_for_what_the_options_say_and_a_lost_task_is_a_row(klass: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert cli.main(["slurm", str(klass), "--out", str(out), "--training", "none", "--chunk", "3", "--cpus-per-task", "4",
                     "--gpus", "1", "--partition", "gpu", "--time", "00:20:00", "--seed", "7"]) == 0
    grade = (out / "slurm" / "grade.sbatch").read_text()
    for line in ("#SBATCH --array=0-1", "#SBATCH --cpus-per-task=4", "#SBATCH --gpus=1", "#SBATCH --partition=gpu",
                 "#SBATCH --time=00:20:00", "--training none", "--seed 7"):
        assert line in grade
    assert "sbatch --dependency=afterany:" in capsys.readouterr().out
    manifest = out / "slurm" / MANIFEST
    assert [entry.name for entry in read_manifest(manifest)] == ["alice", "bob", "carol", "erin"]
    # task 0 runs (alice, bob, carol); task 1 (erin) is lost: the merge still writes every row
    assert cli.main(["slurm", "task", str(manifest), "--index", "0", "--chunk", "3",
                     "--out", str(out), "--training", "none"]) == 0
    assert cli.main(["slurm", "merge", str(manifest), "--chunk", "3", "--out", str(out),
                     "--training", "none"]) == 0
    book = gradebook(out)
    assert book["alice"]["status"] == "ok" and book["alice"]["total"] == book["alice"]["max"] == book["bob"]["total"]
    assert book["carol"]["status"] == "unreadable" and book["erin"]["status"] == "grader-error"
    assert "alice/report.html" in (out / "index.html").read_text()


# Names a student can give a class folder entry, each of which broke the tab-separated manifest:
# a line split in two, a CR, tabs, and a whole row injected to replace a classmate's results.
HOSTILE_NAMES = ["new\nline", "carriage\rreturn", "tab\tbed", "mallory\tfeedc0de\tmallory.zip\nalice\tfeedc0de\tx.zip",
                 "line\u2028separator", "caf\u00e9", "undecodable\udcff"]


def test_the_manifest_keeps_every_name_as_data(tmp_path: Path) -> None:
    """Written and read back without Slurm: one line per submission, each name exactly as it was."""
    entries = [ManifestEntry(i, name, f"{i:064x}", tmp_path / "class" / f"{name}.zip") for i, name in enumerate(HOSTILE_NAMES)]
    manifest = tmp_path / MANIFEST
    write_manifest(manifest, entries)
    assert len(manifest.read_bytes().splitlines()) == len(entries)
    assert read_manifest(manifest) == entries


@pytest.mark.parametrize("line,problem", [
    ("index\tname\tkey", "not a JSON object"),
    ('["a list"]', "exactly the fields"),
    ('{"index": 1, "name": "x", "key": "k"}', "exactly the fields"),
    ('{"index": 7, "name": "x", "key": "k", "path": "/x"}', "index 7 where 1 belongs"),
    ('{"index": 1, "name": "../../etc", "key": "k", "path": "/x"}', "is not one folder name"),
    ('{"index": 1, "name": "x", "key": "k", "path": "relative/x"}', "is not an absolute path"),
])
def test_a_malformed_manifest_line_is_an_error_naming_the_manifest_and_line(tmp_path: Path, capsys, line: str,
                                                                            problem: str) -> None:
    manifest = tmp_path / MANIFEST
    write_manifest(manifest, [ManifestEntry(0, "alice", "k", tmp_path / "alice")])
    manifest.write_text(manifest.read_text() + line + "\n")
    with pytest.raises(ManifestError, match=problem) as raised:
        read_manifest(manifest)
    assert str(raised.value).startswith(f"{manifest}: line 2: ") and "write the jobs again" in str(raised.value)
    for step in ("task", "merge"):  # what the cluster runs: one line in its log, no traceback
        assert cli.main(["slurm", step, str(manifest), "--out", str(tmp_path / "out"), "--training", "none"]) == 2
        err = capsys.readouterr().err
        assert err == f"error: {raised.value}\n"


def test_a_manifest_cut_short_is_an_error_too(tmp_path: Path) -> None:
    manifest = tmp_path / MANIFEST
    manifest.write_text('{"index": 0, "name": "alice", "key": "k", "path": "/x"}\n{"index": 1, "na')
    with pytest.raises(ManifestError, match=f"{manifest}: line 2 is cut short"):
        read_manifest(manifest)


def test_names_with_newlines_crs_and_tabs_get_their_own_rows(tmp_path: Path) -> None:
    """A class whose entries are named to break the manifest: every task and the merge still run,
    and each student gets one row and one folder, under their own name."""
    klass = tmp_path / "class"
    klass.mkdir()
    names = HOSTILE_NAMES[:3] + ["mallory\tfeedc0de\tx\nalice", "alice"]
    for name in names:
        (klass / f"{name}.zip").write_bytes(b"not a zip" * 10)  # unreadable: graded at once
    out = tmp_path / "out"
    assert cli.main(["slurm", str(klass), "--out", str(out), "--training", "none", "--chunk", "3"]) == 0
    manifest = out / "slurm" / MANIFEST
    assert sorted(e.name for e in read_manifest(manifest)) == sorted(names)
    for index in (0, 1):
        assert cli.main(["slurm", "task", str(manifest), "--index", str(index), "--chunk", "3", "--out", str(out),
                         "--training", "none"]) == 0
    assert cli.main(["slurm", "merge", str(manifest), "--chunk", "3", "--out", str(out), "--training", "none"]) == 0
    book = gradebook(out)
    assert sorted(book) == sorted(names) and {row["status"] for row in book.values()} == {"unreadable"}
    assert all((out / name / "results.json").is_file() for name in names)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """munged, slurmctld and slurmd from a minimal one-node slurm.conf, as root; stopped afterwards."""
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "sinfo") if shutil.which(b) is None]
    if missing:
        pytest.skip(f"Slurm is not installed here ({', '.join(missing)} missing): make slurm (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0 or not Path("/etc/munge/munge.key").is_file():
        pytest.skip("a one-node Slurm cluster is started here as root, with munge's key in /etc/munge/munge.key")
    root = tmp_path_factory.mktemp("slurm")
    host = socket.gethostname().split(".")[0]
    socket_path = root / "munge.socket"
    for folder in ("state", "spool"):
        (root / folder).mkdir()
    conf = root / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=vitkit", f"SlurmctldHost={host}", "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge",
        f"AuthInfo=socket={socket_path}", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "MpiDefault=none", "ReturnToService=2",
        f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool", f"SlurmctldPidFile={root}/slurmctld.pid",
        f"SlurmdPidFile={root}/slurmd.pid", f"SlurmctldLogFile={root}/slurmctld.log", f"SlurmdLogFile={root}/slurmd.log",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}", "JobCompType=jobcomp/none",
        f"NodeName={host} CPUs={os.cpu_count()} State=UNKNOWN", "PartitionName=grading Nodes=ALL Default=YES State=UP", ""]))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    started = [subprocess.run(["munged", "--force", f"--socket={socket_path}", f"--pid-file={root}/munged.pid",
                               f"--log-file={root}/munged.log", f"--seed-file={root}/munge.seed"], capture_output=True, text=True),
               subprocess.run(["slurmctld", "-f", str(conf)], capture_output=True, text=True, env=env),
               subprocess.run(["slurmd", "-f", str(conf)], capture_output=True, text=True, env=env)]
    state, deadline = "", time.monotonic() + 30
    while state != "idle" and time.monotonic() < deadline:
        time.sleep(0.5)
        state = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env).stdout.strip()
    try:
        if state != "idle":
            said = " | ".join(p.stderr.strip() for p in started if p.stderr.strip())
            logs = " ".join((root / log).read_text()[-300:] for log in ("slurmctld.log", "slurmd.log") if (root / log).exists())
            pytest.skip(f"the one-node Slurm cluster did not start (node state {state!r}): {said} {logs}")
        yield env
    finally:
        for pid in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
            try:
                os.kill(int((root / pid).read_text()), 15)
            except (OSError, ValueError):
                pass


def test_a_class_is_graded_by_a_job_array_and_merged(slurm_cluster: dict, klass: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SLURM_CONF", slurm_cluster["SLURM_CONF"])
    out = tmp_path / "out"
    assert cli.main(["slurm", str(klass), "--out", str(out), "--training", "none", "--cpus-per-task", "1",
                     "--submit", "--wait"]) == 0
    book = gradebook(out)
    assert [book[s]["status"] for s in ("alice", "bob", "carol", "erin")] == ["ok", "ok", "unreadable", "ok"]
    assert book["alice"]["total"] == book["alice"]["max"] == book["erin"]["total"]
    logs = sorted(p.name for p in (out / "slurm").glob("task-*.log"))
    assert logs == ["task-0.log", "task-1.log", "task-2.log", "task-3.log"]  # one array task per submission


def test_jobs_that_would_train_without_their_data_are_not_written(tmp_path: Path, capsys) -> None:
    klass = tmp_path / "class"
    (klass / "alice").mkdir(parents=True)
    nowhere = tmp_path / "no-data"
    assert cli.main(["slurm", str(klass), "--out", str(tmp_path / "out"), "--data-dir", str(nowhere)]) == 2
    err = capsys.readouterr().err
    assert "no job was written" in err and str(nowhere / "mnist" / "train-images-idx3-ubyte.gz") in err
    assert not (tmp_path / "out").exists()
