"""The process-wide memory policy (amanet.runtime.memory): freed memory is reused, not faulted
in again. Its effects are checked in fresh interpreters (subprocesses), whatever policy the pytest
process itself runs under (in-process CLI tests turn it on)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from amanet.runtime import memory

# Allocate and free a 64 MB tensor 20 times; report the page faults of the last 10 rounds.
_FAULTS = """
import json, resource, sys, torch
from amanet.runtime import memory
applied = memory.retain_freed_memory()
x = torch.ones(16 * 2**20)
def rounds(n):
    for _ in range(n):
        y = x * 2
        del y
rounds(10)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(10)
print(json.dumps({"applied": applied, "policy": memory.policy(),
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _run(code, malloc=None):
    env = dict(os.environ)
    env.pop("AMANET_MALLOC", None)
    if malloc is not None:
        env["AMANET_MALLOC"] = malloc
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_freed_memory_is_reused_unless_turned_off():
    retained = _run(_FAULTS)
    system = _run(_FAULTS, malloc="system")
    assert not system["applied"] and system["policy"] == "system"
    if memory._glibc_mallopt() is None:  # other C libraries: nothing to switch, and it says so
        assert not retained["applied"] and retained["policy"] == "unsupported"
        return
    assert retained["applied"] and retained["policy"] == "retained"
    # 10 x 64 MB of fresh pages is 163840 faults of 4 KB; reused memory needs none
    assert system["faults"] > 80000, system
    assert retained["faults"] < 2000, retained


def test_bad_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(memory, "_state", None)
    monkeypatch.setenv("AMANET_MALLOC", "jemalloc")
    with pytest.raises(ValueError, match="AMANET_MALLOC must be 'retain' .* or 'system', got 'jemalloc'"):
        memory.retain_freed_memory()
    assert memory.policy() == "default"


def test_other_c_libraries_are_left_alone(monkeypatch, caplog):
    monkeypatch.setattr(memory, "_state", None)
    monkeypatch.delenv("AMANET_MALLOC", raising=False)
    monkeypatch.setattr(memory, "_glibc_mallopt", lambda: None)
    with caplog.at_level("INFO", logger="amanet.runtime.memory"):
        assert memory.retain_freed_memory() is False
        assert memory.retain_freed_memory() is False  # decided once
    assert memory.policy() == "unsupported"
    assert sum("not glibc" in r.message for r in caplog.records) == 1


def test_predictor_and_cli_turn_it_on(tmp_path):
    predictor = _run("""
import json
from amanet.assets import DEMO_MODEL
from amanet.runtime import Predictor, memory
before = memory.policy()
Predictor(None, weights=str(DEMO_MODEL))
print(json.dumps({"before": before, "after": memory.policy()}))
""")
    assert predictor["before"] == "default" and predictor["after"] in ("retained", "unsupported")
    # any command: even one that fails on its input (exit code 2) ran under the policy
    cli = _run("""
import json
from amanet import cli
from amanet.runtime import memory
code = cli.main(["convert", %r, %r])
print(json.dumps({"code": code, "after": memory.policy()}))
""" % (str(tmp_path / "missing.pkl"), str(tmp_path / "out.pth")))
    assert cli["code"] == 2 and cli["after"] in ("retained", "unsupported")
    # importing amanet and torch alone changes nothing
    assert _run(_FAULTS.replace("applied = memory.retain_freed_memory()", "applied = None"))["policy"] == "default"
