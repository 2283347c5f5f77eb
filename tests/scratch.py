"""Scratch folders for module- and session-scoped fixtures.

Exports and checkpoints are 0.2-0.9 GB each; kept until pytest's session end they add up to
~20 GB, more than a CI runner's disk. A folder made here is removed when the fixture that made it
is torn down (for a parametrized fixture: when pytest moves on to the next parameter).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def scratch_dir(request: pytest.FixtureRequest, factory: pytest.TempPathFactory, name: str) -> Path:
    """``factory.mktemp(name)``, deleted at the requesting fixture's teardown."""
    path = factory.mktemp(name)
    request.addfinalizer(lambda: shutil.rmtree(path, ignore_errors=True))
    return path
