"""scripts/write_env.py: the generated .env is its owner's alone from its first byte, and stays so."""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "write_env.py"


def write_env(target: Path, umask: int = 0o022, max_file_bytes: int | None = None) -> subprocess.CompletedProcess:
    def limits():
        os.umask(umask)
        if max_file_bytes is not None:  # writes beyond it fail (Python ignores SIGXFSZ): a crash mid-write
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run(
        [sys.executable, str(SCRIPT), str(target)], capture_output=True, text=True, preexec_fn=limits, timeout=60
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_env_is_mode_600_whatever_the_umask(tmp_path):
    target = tmp_path / ".env"
    written = write_env(target, umask=0)
    assert written.returncode == 0, written.stderr
    assert mode(target) == 0o600
    text = target.read_text()
    assert "AIRFLOW__CORE__FERNET_KEY=" in text and "RECSYS_MYSQL_PASSWORD=" in text
    values = [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("export ")]
    assert not [v for v in values if len(v) > 8 and v in written.stdout + written.stderr], "a secret was printed"


def test_the_secrets_are_never_readable_by_others_even_while_being_written(tmp_path):
    """A write that dies after the first bytes (here: a file size limit) leaves a file only its owner reads."""
    target = tmp_path / ".env"
    crashed = write_env(target, umask=0o022, max_file_bytes=40)
    assert crashed.returncode != 0 and "File too large" in crashed.stderr
    assert target.exists() and 0 < target.stat().st_size <= 40
    assert mode(target) == 0o600, f"a half-written .env was mode {mode(target):o}: others could read its secrets"


def test_an_existing_env_keeps_its_secrets_and_is_tightened_with_a_warning(tmp_path):
    target = tmp_path / ".env"
    target.write_text("export RECSYS_MYSQL_PASSWORD=kept\n")
    target.chmod(0o644)
    rerun = write_env(target)
    assert rerun.returncode == 0, rerun.stderr
    assert target.read_text() == "export RECSYS_MYSQL_PASSWORD=kept\n"
    assert mode(target) == 0o600
    assert "warning" in rerun.stderr and "644" in rerun.stderr


def test_a_tight_env_is_left_alone_without_a_warning(tmp_path):
    target = tmp_path / ".env"
    assert write_env(target).returncode == 0
    before = target.read_text()
    again = write_env(target)
    assert again.returncode == 0 and again.stderr == "" and target.read_text() == before and mode(target) == 0o600
