"""A bare clone runs its own tests: every file they read is in the repository, and the suite has one import path."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REAL, REPO

# Paths out of the checkout into the data folder that sits beside it on the machine it was written on.
OUTSIDE = re.compile(
    r"\.\./shared\b"  # ../shared
    r"|/work/shared\b"
    r"|shared[\"']?\s*[/\\]\s*[\"']?data\b"  # shared/data, "shared" / "data"
    r"|/\s*[\"']shared[\"']"  # REPO.parent / "shared"
)
CODE_SUFFIXES = {".py", ".ipynb", ".sh"}
SELF = Path(__file__).resolve()  # names the patterns it looks for


def code_files() -> list[Path]:
    """Every test, benchmark, script and notebook file, and the CI script."""
    files = [REPO / ".ci" / "run"]
    for folder in ("tests", "benchmarks", "scripts", "notebooks"):
        files += [p for p in sorted((REPO / folder).rglob("*"))
                  if p.is_file() and p.suffix in CODE_SUFFIXES and "__pycache__" not in p.parts]
    return [p for p in files if p.resolve() != SELF]


def test_no_test_benchmark_script_or_notebook_reads_a_path_outside_the_repository():
    hits = []
    for path in code_files():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not hits, "reads outside the repository (copy the file into tests/fixtures):\n" + "\n".join(hits)


def test_the_real_data_is_in_the_repository_and_every_file_is_described_in_its_folders_readme():
    assert REAL == REPO / "tests" / "fixtures" and REAL.is_dir()
    files = [p for p in REAL.rglob("*") if p.is_file() and p.name not in ("README.md", ".gitattributes")]
    assert files
    undescribed = []
    for path in files:
        folder = next(d for d in path.parents if (d / "README.md").is_file())
        if f"`{path.relative_to(folder).as_posix()}`" not in (folder / "README.md").read_text(encoding="utf-8"):
            undescribed.append(str(path.relative_to(REAL)))
    assert not undescribed, f"fixtures with no origin in their folder's README.md: {undescribed}"


def test_the_loopback_servers_have_one_import_name():
    import tests.loopback.registry_servers  # noqa: F401

    # a second name would make a second copy of each module, its classes and its state
    assert importlib.util.find_spec("loopback") is None
    assert importlib.util.find_spec("conftest") is None


@pytest.mark.parametrize("launch", ["console script", "python -m pytest"])
def test_the_suite_collects_through_the_pytest_console_script_and_python_m_pytest(launch):
    # the console script puts its bin folder first on sys.path, not the current folder
    code = "import sys; sys.path.pop(0); import pytest; sys.exit(pytest.console_main())"
    cmd = [sys.executable, "-c", code] if launch == "console script" else [sys.executable, "-m", "pytest"]
    files = ["tests/test_ocsp.py", "tests/test_whois.py", "tests/test_cli.py"]
    done = subprocess.run([*cmd, "-q", "--collect-only", "-p", "no:cacheprovider", *files], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "tests collected" in done.stdout
