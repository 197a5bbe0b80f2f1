"""``requires`` (tests/conftest.py): a test whose dependency is missing skips with its reason, but
fails under ``CI=true``, so CI cannot pass without the tests the README says it runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")
TESTS = '''
from conftest import requires


def test_with_a_missing_dependency():
    requires(False, "the frobnicator is not installed")


def test_with_its_dependency():
    requires(True, "never shown")
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A directory holding the real conftest.py and two tests that use its ``requires``."""
    directory = tmp_path_factory.mktemp("ci_requirements")
    shutil.copy(CONFTEST, directory / "conftest.py")
    (directory / "test_requirement.py").write_text(TESTS)
    return directory


def run_pytest(directory: Path, ci: str | None) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if name != "CI"}
    if ci is not None:
        env["CI"] = ci
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "test_requirement.py"]
    return subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True, timeout=120)


def test_a_missing_dependency_skips_with_its_reason_outside_ci(project):
    result = run_pytest(project, ci=None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 1 skipped" in result.stdout
    assert "SKIPPED [1] test_requirement.py:6: the frobnicator is not installed" in result.stdout


def test_a_missing_dependency_fails_under_ci(project):
    result = run_pytest(project, ci="true")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 1 passed" in result.stdout
    assert "CI=true, yet the frobnicator is not installed: CI must run this test, not skip it" in result.stdout
