"""benchmarks/gpu_check.sh on a machine without a CUDA GPU: every CUDA part skipped, clearly."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
CUDA_PARTS = ("train_benchmark_cuda", "infer_cuda", "short_training_cuda")


def _cuda_available():
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


pytestmark = [
    pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash"),
    pytest.mark.skipif(_cuda_available(), reason="this machine has a CUDA GPU: run the script "
                       "itself (minutes), this test checks the CPU path"),
]


def _run(out, **env):
    return subprocess.run(["bash", str(SCRIPT), str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable, **env})


def test_cpu_machine_skips_every_cuda_part_with_a_clear_line(tmp_path):
    pytest.importorskip("empanada_train")
    pytest.importorskip("empanada_infer")
    result = _run(tmp_path / "out", GPU_CHECK_CPU_SMOKE="0")
    assert result.returncode == 0, result.stdout + result.stderr
    for part in CUDA_PARTS:
        assert f"SKIP {part}: no CUDA GPU on this machine" in result.stdout
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert report["environment"]["cuda"] is False
    assert {p: v["status"].split(":")[0] for p, v in report["parts"].items()} == {
        **{p: "skipped" for p in CUDA_PARTS}, "cpu_smoke": "skipped"}
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "SKIP infer_cuda" in summary
    assert "results in" in summary


def test_usage_errors():
    result = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert "usage: bash benchmarks/gpu_check.sh OUT_DIR" in result.stderr


def test_missing_packages_fail_with_the_install_line(tmp_path):
    result = _run(tmp_path / "out", PYTHON=shutil.which("false") or "/bin/false")
    assert result.returncode == 1
    assert "cannot import torch and the empanada packages" in result.stdout
