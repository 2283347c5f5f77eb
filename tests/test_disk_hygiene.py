"""The suite's own disk use: exports and checkpoints are 0.2-0.9 GB each, and a run that keeps
them all (~20 GB) fills a CI runner's disk. Checked from the test sources with ``ast`` and from
the pytest configuration."""
from __future__ import annotations

import ast
import configparser
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _raw_mktemp_calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "mktemp" and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "tmp_path_factory"):
            yield node.lineno


@pytest.mark.parametrize("path", sorted(TESTS.glob("test_*.py")), ids=lambda p: p.name)
def test_fixture_folders_are_removed_at_teardown(path):
    """A wider-scoped fixture makes its folder with scratch.scratch_dir, which deletes it at the
    fixture's teardown; a bare tmp_path_factory.mktemp lives until the session ends."""
    lines = list(_raw_mktemp_calls(path))
    assert not lines, f"{path.name}:{lines}: use scratch_dir(request, tmp_path_factory, name)"


def test_passing_tests_leave_no_tmp_path():
    ini = configparser.ConfigParser()
    ini.read(TESTS.parent / "pytest.ini")
    assert ini.get("pytest", "tmp_path_retention_policy") == "failed"


def test_scratch_dir_is_deleted_by_its_finalizer(tmp_path_factory):
    from scratch import scratch_dir

    class Request:
        finalizers = []

        def addfinalizer(self, fn):
            self.finalizers.append(fn)

    request = Request()
    d = scratch_dir(request, tmp_path_factory, "hygiene")
    (d / "big.bin").write_bytes(b"\0" * 1024)
    assert d.is_dir() and len(request.finalizers) == 1
    request.finalizers[0]()
    assert not d.exists()
