"""The jail: what the student's code can see, reach and leave behind. Each defence is tested
with a hostile submission written for it (fixtures/hostile/escape.py)."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch

from grader import jail
from grader.sandbox import PROBES, Limits, Sandbox
from grader.submission import stage_submission

pytestmark = pytest.mark.integration  # the tier `make test-fast` leaves out (tests/conftest.py)

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]
ESCAPE = FIXTURES / "hostile" / "escape.py"
PROBE_PATHS = [FIXTURES / "probes"]
CALL = "sandbox_test_probes:call"
ISOLATION = jail.detect()
needs_jail = pytest.mark.skipif(ISOLATION.bwrap is None, reason=f"no jail here: {ISOLATION.layers[0]}")


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    sandbox = Sandbox(stage_submission(ESCAPE, tmp_path_factory.mktemp("escape")), Limits(call_seconds=10),
                      probe_paths=PROBE_PATHS)
    assert sandbox.start().ok
    yield sandbox
    sandbox.close()


@needs_jail
def test_the_child_sees_neither_the_grader_nor_the_data_nor_the_outputs(box: Sandbox, tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "grades"
    for folder in (data, out):
        folder.mkdir()
    (data / "t10k-labels-idx1-ubyte.gz").write_bytes(b"labels")
    hidden = [REPO / "reference", REPO / "grader", REPO / "theory", REPO / "Makefile", REPO / "tests" / "conftest.py",
              data, out, Path.home() / ".bash_history", "/etc/passwd"]
    assert box.call(CALL, "visible", [str(p) for p in hidden]).value == [False] * len(hidden)
    assert box.call(CALL, "visible", [str(box.staged.package_dir / "escape.py")]).value == [True]


@needs_jail
def test_the_child_has_no_network(box: Sandbox) -> None:
    with socket.socket() as server:  # listening here, on the grader's loopback
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert box.call(CALL, "connect", server.getsockname()[1]).value != "connected"


def _running(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and marker in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry))
        except OSError:
            continue
    return found


@needs_jail
def test_a_process_started_in_its_own_session_ends_with_the_child(tmp_path: Path) -> None:
    marker = f"stray-{os.getpid()}-{time.monotonic_ns()}"
    with Sandbox(stage_submission(ESCAPE, tmp_path), Limits(call_seconds=10), probe_paths=PROBE_PATHS) as sandbox:
        assert sandbox.call(CALL, "start_stray", marker).ok
        assert _running(marker)  # it did start
    deadline = time.monotonic() + 5
    while _running(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _running(marker) == []


def test_without_a_jail_what_the_child_leaves_behind_is_killed_too(tmp_path: Path) -> None:
    marker = f"stray-{os.getpid()}-{time.monotonic_ns()}"
    none = jail._describe(None, None, "off for this test")
    with Sandbox(stage_submission(ESCAPE, tmp_path), Limits(call_seconds=10), probe_paths=PROBE_PATHS,
                 isolation=none) as sandbox:
        assert sandbox.call(CALL, "start_stray", marker).ok
        assert _running(marker)
    assert _running(marker) == []


@needs_jail
@pytest.mark.skipif(os.geteuid() != 0, reason="the dedicated uid is used when the grader runs as root")
def test_the_child_runs_as_a_dedicated_unprivileged_user(box: Sandbox) -> None:
    assert box.call(CALL, "whoami").value == jail.JAIL_UID


def test_patching_the_grader_probes_changes_nothing(box: Sandbox) -> None:
    q = torch.randn(1, 3, 4)
    before = box.call(f"{PROBES}:attention_function", q, q, q)
    assert box.call(CALL, "patch_probes").value is True
    after = box.call(f"{PROBES}:attention_function", q, q, q)
    assert after.ok and torch.equal(after.value["out"], before.value["out"]) and after.value["weights"] is not None


def test_without_a_jail_grading_works_and_the_report_says_what_is_not_isolated(tmp_path: Path) -> None:
    none = jail._describe(None, None, "bubblewrap is not installed")
    assert any(line.startswith("filesystem: OFF (bubblewrap is not installed)") for line in none.layers)
    assert any(line.startswith("network: OFF") for line in none.layers)
    with Sandbox(stage_submission(ESCAPE, tmp_path), Limits(call_seconds=10), probe_paths=PROBE_PATHS,
                 isolation=none) as sandbox:
        q = torch.randn(1, 2, 4)
        assert sandbox.call(f"{PROBES}:attention_function", q, q, q).ok


@needs_jail
def test_the_child_cannot_fill_the_graders_disk(tmp_path: Path) -> None:
    """Its working folder is a private in-memory folder of SCRATCH_BYTES: writing past that fails,
    and nothing lands in the grader's folders."""
    limit = jail.SCRATCH_BYTES >> 20
    with Sandbox(stage_submission(ESCAPE, tmp_path), Limits(call_seconds=30), probe_paths=PROBE_PATHS) as sandbox:
        written = sandbox.call(CALL, "fill", limit + 64)
        assert written.ok and written.value <= limit, (written.error, written.value)
        assert list((sandbox._workspace() / "cwd").iterdir()) == []  # on the grader's side: nothing


def test_a_tree_too_deep_to_remove_recursively_is_removed(tmp_path: Path) -> None:
    """Without the jail the child writes into the grader's folder: removing it must survive any tree."""
    none = jail._describe(None, None, "off for this test")
    sandbox = Sandbox(stage_submission(ESCAPE, tmp_path), Limits(call_seconds=30), probe_paths=PROBE_PATHS,
                      isolation=none)
    assert sandbox.call(CALL, "deep", 3000).value == 3000
    work = sandbox._workspace()
    sandbox.close()
    assert not work.exists()


def test_remove_tree_removes_any_depth_and_follows_no_link(tmp_path: Path) -> None:
    from grader.scratch import remove_tree

    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "file").write_text("kept")
    root = tmp_path / "tree"
    root.mkdir()
    os.symlink(keep, root / "link")
    here = os.getcwd()
    os.chdir(root)
    try:
        for _ in range(3000):  # deeper than shutil.rmtree's recursion goes
            os.mkdir("d")
            os.chdir("d")
    finally:
        os.chdir(here)
    remove_tree(root)
    assert not root.exists() and (keep / "file").read_text() == "kept"


REAPED = '''
import json, os, sys, tempfile
from pathlib import Path
from grader import jail
from grader.children import become_subreaper, children_of
from grader.sandbox import Limits, Sandbox
from grader.submission import stage_submission
become_subreaper()  # as a process that also grades without the jail is: orphans come to it
jail.detect()  # its trial child is jailed too
with tempfile.TemporaryDirectory() as work:
    box = Sandbox(stage_submission(Path(sys.argv[1]), Path(work)), Limits(call_seconds=1.0))
    box.start()
    box.close()
states = [open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] for p in children_of(os.getpid())]
print(json.dumps(states))
'''


@needs_jail
def test_no_jailed_child_is_left_a_zombie_even_where_the_grader_is_a_subreaper(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", REAPED, str(FIXTURES / "misbehave.py")], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == []  # no child left, zombie or alive
