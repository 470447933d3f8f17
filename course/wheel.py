"""The kit's wheel, built from the project's own files as a fresh clone has them: tracked files and
new ones git does not ignore, never a ``build/`` or ``*.egg-info`` left by an earlier build (whose
stale modules a wheel would otherwise carry)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def source_files(repo: Path = REPO) -> list[str]:
    """The checkout's files as git sees them (tracked, and new ones it does not ignore)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo,
                                capture_output=True, check=True).stdout.decode()
    except (OSError, subprocess.CalledProcessError) as e:
        raise RuntimeError(f"cannot list the kit's files with git in {repo} ({e}); build from a git checkout") from None
    return [name for name in listed.split("\0") if name and (repo / name).is_file()]


def clean_copy(to: Path, repo: Path = REPO) -> Path:
    for name in source_files(repo):
        (to / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, to / name)
    return to


def build_wheel(out_dir: Path) -> Path:
    """Build the kit's wheel into ``out_dir`` and return it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vitkit-source-") as tmp:
        source = clean_copy(Path(tmp))
        built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                                "-w", str(out_dir), str(source)], capture_output=True, text=True, timeout=600)
    if built.returncode != 0:
        raise RuntimeError(f"building the kit's wheel failed:\n{built.stderr[-2000:]}")
    return max(out_dir.glob("vit_homework_kit-*.whl"), key=lambda p: p.stat().st_mtime)
