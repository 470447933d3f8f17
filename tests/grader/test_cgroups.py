"""Control groups: how the grader finds where it may make them (fake hierarchies for both
layouts), and, where this machine has a writable one, that a child's whole tree is capped and
ended (real processes; a hostile submission through the sandbox)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grader import cgroups, jail
from grader.sandbox import Limits, Sandbox
from grader.submission import stage_submission

pytestmark = pytest.mark.integration  # the tier `make test-fast` leaves out (tests/conftest.py)

ESCAPE = Path(__file__).parent / "fixtures" / "hostile" / "escape.py"
HERE, WHY_NOT = cgroups.find()
needs_cgroups = pytest.mark.skipif(HERE is None, reason=f"no writable control group here: {WHY_NOT}")


def _v2(tmp_path: Path, available: str = "cpu memory pids", enabled: str = "") -> tuple[Path, Path]:
    root, own = tmp_path / "cg", tmp_path / "cg" / "grader.scope"
    own.mkdir(parents=True)
    (root / "cgroup.controllers").write_text(available + "\n")
    (own / "cgroup.controllers").write_text(available + "\n")
    (own / "cgroup.subtree_control").write_text(enabled + "\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/grader.scope\n")
    return root, proc


def test_v2_enables_memory_and_pids_for_child_groups(tmp_path: Path) -> None:
    root, proc = _v2(tmp_path)
    found, why = cgroups.find(root, proc)
    assert found == cgroups.Hierarchy(2, (root / "grader.scope",)) and why == ""
    assert (root / "grader.scope" / "cgroup.subtree_control").read_text() == "+memory +pids"


def test_v2_without_the_memory_controller_says_so(tmp_path: Path) -> None:
    root, proc = _v2(tmp_path, available="cpu pids")
    found, why = cgroups.find(root, proc)
    assert found is None and "memory controller is not delegated" in why


def test_v1_uses_the_memory_and_pids_folders_of_the_grader(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    for name in ("memory", "pids"):
        (root / name / "job" / "7").mkdir(parents=True)
    proc = tmp_path / "proc-cgroup"
    proc.write_text("4:memory:/job/7\n8:pids:/job/7\n1:cpu,cpuacct:/\n")
    found, _ = cgroups.find(root, proc)
    assert found == cgroups.Hierarchy(1, (root / "memory" / "job" / "7", root / "pids" / "job" / "7"))


def test_a_container_that_mounts_its_own_group_as_the_root_is_understood(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    for name in ("memory", "pids"):
        (root / name).mkdir(parents=True)
    proc = tmp_path / "proc-cgroup"
    proc.write_text("4:memory:/docker/abc\n8:pids:/docker/abc\n")
    assert cgroups.find(root, proc)[0] == cgroups.Hierarchy(1, (root / "memory", root / "pids"))


def test_no_pids_controller_is_no_hierarchy(tmp_path: Path) -> None:
    (tmp_path / "cg" / "memory").mkdir(parents=True)
    proc = tmp_path / "proc-cgroup"
    proc.write_text("4:memory:/\n")
    found, why = cgroups.find(tmp_path / "cg", proc)
    assert found is None and "pids controller is not mounted" in why


@pytest.mark.parametrize("version,files", [(1, {"memory.limit_in_bytes": "1048576", "pids.max": "9"}),
                                           (2, {"memory.max": "1048576", "pids.max": "9"})])
def test_a_group_is_made_with_its_caps_and_removed(tmp_path: Path, version: int, files: dict[str, str]) -> None:
    parents = (tmp_path / "a",) if version == 2 else (tmp_path / "a", tmp_path / "b")
    for parent in parents:
        parent.mkdir()
    group = cgroups.TreeGroup(cgroups.Hierarchy(version, parents), "child", 1 << 20, 9)
    written = {f.name: f.read_text() for folder in group.folders for f in folder.iterdir()}
    assert files.items() <= written.items()
    for folder in group.folders:  # a fake hierarchy: rmdir needs the folders empty
        for f in folder.iterdir():
            f.unlink()
    group.close()
    assert not any(folder.exists() for folder in group.folders)


def test_the_layer_is_named_in_the_isolation_lines() -> None:
    on = jail._describe(None, None, "off", cgroups.Hierarchy(2, (Path("/x"),)))
    off = jail._describe(None, None, "off", None, "the control groups are read-only here")
    assert any("capped for the whole process tree (control group v2)" in line for line in on.layers)
    assert any("ends with its check (control group)" in line for line in on.layers)
    assert any("not capped for the whole process tree (the control groups are read-only here)" in line
               for line in off.layers)


def _group(memory: int | None = None, processes: int | None = None) -> cgroups.TreeGroup:
    return cgroups.TreeGroup(HERE, f"vitkit-test-{os.getpid()}-{time.monotonic_ns()}", memory, processes)


FORKS = """
import os, sys, time
alive = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        held = b"x" * (100 << 20)
        time.sleep(30)
        os._exit(0)
    alive.append(pid)
time.sleep(2)
print(sum(os.waitpid(p, os.WNOHANG) == (0, 0) for p in alive))
for p in alive:
    try:
        os.kill(p, 9)
    except OSError:
        pass
"""


@needs_cgroups
def test_memory_split_over_processes_is_capped_together() -> None:
    group = _group(memory=300 << 20)
    try:
        done = subprocess.run(group.wrap([sys.executable, "-c", FORKS]), capture_output=True, text=True, timeout=60)
        assert int(done.stdout) < 4 and group.ran_out_of_memory()  # 4 x 100 MB do not fit in 300 MB
    finally:
        group.close()


SPAWNS = """
import subprocess
started = []
for _ in range(20):
    try:
        started.append(subprocess.Popen(["sleep", "5"], stdout=subprocess.DEVNULL))
    except OSError:
        pass
print(len(started))
"""


@needs_cgroups
def test_processes_are_capped_together() -> None:
    group = _group(processes=6)
    try:
        done = subprocess.run(group.wrap([sys.executable, "-c", SPAWNS]), capture_output=True, text=True, timeout=60)
        assert 0 < int(done.stdout) <= 5  # the interpreter is the sixth
    finally:
        group.close()


@needs_cgroups
def test_closing_the_group_ends_what_left_its_session() -> None:
    group = _group()
    stray = "import subprocess, sys; subprocess.Popen(['sleep', '300'], start_new_session=True)"
    subprocess.run(group.wrap([sys.executable, "-c", stray]), timeout=30)
    left = group.pids()
    assert left  # the sleep outlived its parent, in its own session
    group.close()
    assert not any(Path(f"/proc/{pid}").exists() and "sleep" in Path(f"/proc/{pid}/cmdline").read_text()
                   for pid in left)
    assert not any(folder.exists() for folder in group.folders)


@needs_cgroups
def test_a_submission_that_splits_its_memory_over_processes_is_stopped(tmp_path: Path) -> None:
    """4 x 400 MB, each far under the per-process limit, against a 1 GiB cap for the tree."""
    isolation = jail.detect()
    assert isolation.tree is not None
    limits = Limits(call_seconds=30, tree_memory_bytes=1 << 30)
    with Sandbox(stage_submission(ESCAPE, tmp_path), limits, isolation=isolation,
                 probe_paths=[ESCAPE.parent.parent / "probes"]) as box:
        assert box.start().ok
        outcome = box.call("sandbox_test_probes:call", "hog", 4, 400)
        assert (outcome.ok and outcome.value < 4) or outcome.kind == "memory", outcome
