"""bench/ops.py runs in its quick mode and prints the fused-vs-reference table."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from amanet.ops import library

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not library.load_library(), reason="amanet._C is not built")
def test_bench_ops_quick_prints_table():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "ops.py"), "--quick", "--only",
                           "aggregation,uv_loss"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "| case | shape | fused ms | reference ms | speed-up |" in out
    assert "memcpy" in out
    # the memory policy it ran under (the product's: freed memory reused), where glibc has one
    assert "malloc retained" in out or "malloc unsupported" in out, out.splitlines()[0]
    for row in ("aggregation fwd, S only", "aggregation fwd+bwd, grads of S and stage sums (AMA training)",
                "aggregation fwd+bwd, grads of S and every G", "aggregation fwd, S only, bf16",
                "UV loss fwd+bwd"):
        assert f"| {row}" in out, out
    rows = [line for line in out.splitlines() if line.startswith("| aggregation") or line.startswith("| UV")]
    assert all(line.count("|") == 9 for line in rows)


def test_bench_ops_rejects_unknown_group():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "ops.py"), "--quick", "--only", "nope"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "unknown benchmark group" in proc.stderr
