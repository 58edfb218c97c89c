"""The lock and pyproject.toml are checked against each other (tools/check_lock.py, run by
`make setup` and `make lint`): what CI tests is exactly what the lock installs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def check_lock(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(root / "tools" / "check_lock.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def project_copy(tmp_path: Path) -> Path:
    for part in ("tools", "requirements"):
        shutil.copytree(ROOT / part, tmp_path / part)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_lock_agrees_with_pyproject_and_is_what_is_installed() -> None:
    result = check_lock(ROOT)
    assert result.returncode == 0, result.stderr
    assert "agrees" in result.stdout


def test_a_range_the_lock_does_not_satisfy_is_named_with_the_way_out(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    assert '"fastapi>=0.163.2,<1"' in text
    pyproject.write_text(text.replace('"fastapi>=0.163.2,<1"', '"fastapi>=0.999,<1"'))

    result = check_lock(root)

    assert result.returncode == 1
    assert "pyproject.toml asks for fastapi<1,>=0.999, the lock has fastapi==0.163.2" in (
        result.stderr
    )
    assert "make relock" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_dependency_dropped_from_pyproject_must_leave_the_lock(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    pyproject = root / "pyproject.toml"
    lines = pyproject.read_text().splitlines(keepends=True)
    pyproject.write_text("".join(line for line in lines if '"aiosmtpd>=' not in line))

    result = check_lock(root)

    assert result.returncode == 1
    # aiosmtpd, and atpublic which only aiosmtpd needed.
    assert "aiosmtpd is in the lock but nothing in pyproject.toml needs it" in result.stderr
    assert "atpublic is in the lock but nothing in pyproject.toml needs it" in result.stderr


def test_a_hand_edited_lock_that_the_venv_does_not_hold_is_refused(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    lock = root / "requirements" / "lock.txt"
    text = lock.read_text()
    assert "\nclick==8.5.1 \\\n" in text
    lock.write_text(text.replace("\nclick==8.5.1 \\\n", "\nclick==8.5.2 \\\n"))

    result = check_lock(root)

    assert result.returncode == 1
    assert "click is installed at 8.5.1, the lock has 8.5.2" in result.stderr
