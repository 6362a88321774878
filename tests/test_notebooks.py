"""The notebooks run top to bottom on the bundled sample, offline, writing only into a temporary folder."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.conftest import REPO, SAMPLE

NOTEBOOKS = REPO / "notebooks"
NAMES = ("explore_scan.ipynb", "ca_self_audit.ipynb")


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under folder (caches aside) with its size and mtime."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts
    }


def _outputs(nb: nbformat.NotebookNode) -> list[str]:
    """The text (or the MIME types, for images) of every code cell's outputs, one string per cell."""
    texts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        parts = []
        for out in cell.outputs:
            if out.output_type == "stream":
                parts.append(out.text)
            elif "data" in out:
                parts.append(" ".join(sorted(out.data)))
                parts.append(out.data.get("text/markdown") or out.data.get("text/plain", ""))
        texts.append("\n".join(parts))
    return texts


def _execute(name: str, tmp: Path) -> nbformat.NotebookNode:
    """Run a notebook as Jupyter would (cwd notebooks/, kernel TMPDIR=tmp); fail on any cell error or repo write."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    before = {"notebooks": _tree(NOTEBOOKS), "sample": _tree(SAMPLE)}
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute(env={**os.environ, "TMPDIR": str(tmp)})
    except CellExecutionError as exc:
        pytest.fail(f"{name}: a cell failed:\n{exc}")
    assert _tree(NOTEBOOKS) == before["notebooks"], f"{name} wrote into notebooks/"
    assert _tree(SAMPLE) == before["sample"], f"{name} changed data/sample/"
    return nb


@pytest.fixture(scope="module")
def explore(tmp_path_factory) -> tuple[nbformat.NotebookNode, Path]:
    tmp = tmp_path_factory.mktemp("explore")
    return _execute("explore_scan.ipynb", tmp), tmp


@pytest.fixture(scope="module")
def audit(tmp_path_factory) -> tuple[nbformat.NotebookNode, Path]:
    tmp = tmp_path_factory.mktemp("audit")
    return _execute("ca_self_audit.ipynb", tmp), tmp


def test_the_committed_notebooks_have_no_outputs():
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), name
        assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.parametrize("which", ["explore", "audit"])
def test_each_notebook_works_in_a_temporary_folder_and_deletes_it_at_the_end(which, request):
    nb, tmp = request.getfixturevalue(which)
    first = _outputs(nb)[0]
    # The first cell shows the work folder: under the kernel's TMPDIR, not in the repository.
    assert str(tmp) in first, first
    assert not list(tmp.glob("ctscan-notebook-*")), f"{which} left its temporary folder behind"


def test_explore_scan_draws_the_three_plots_and_finds_the_cualtis_reissue(explore):
    texts = _outputs(explore[0])
    assert sum("image/png" in t for t in texts) == 3
    assert any("('mail.cuatis.net', 'mail.cualtis.net')" in t for t in texts)
    assert any("'unregistered_domain': 2" in t for t in texts)


def test_ca_self_audit_reaches_the_xlsx_and_the_incident_summary(audit):
    joined = "\n".join(_outputs(audit[0]))
    assert "Summary of the problematic certificates" in joined  # incident-summary.md, rendered
    assert "'unregistered_domain': (2," in joined  # the problem's sheet in suspects.xlsx
    assert "'Precertificate SHA-256 hash'" in joined  # the CCADB appendix columns
    assert "https://crt.sh/?sha256=C6021A07" in joined
