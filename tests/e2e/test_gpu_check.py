"""The GPU check script at CI size on the CPU, so that it still runs when a GPU machine is there."""

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_cpu_smoke_times_every_section(redis_url, tmp_path):
    out = tmp_path / "gpu_check.md"
    env = {**os.environ, "REDIS_URL": redis_url, "WAVESHIELD_DEVICE": "cpu",
           "WAVESHIELD_OUTPUT_DIR": str(tmp_path / "out")}
    result = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--cpu-smoke", "--out", str(out)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = out.read_text()
    for check in ("DWT reconstruction (haar, cpu)", "DWT reconstruction (haar, CPU, 2 threads)", "fgsm 0.01 (cpu)",
                  "bim 0.01 (cpu)", "deepfool (cpu)", "DeepFool, torchattacks (cpu)",
                  "DeepFool, waveshield with torchattacks' rule (cpu)", "training, width 8, 1 epoch",
                  "paper's grid, staged pipeline (workers on cpu)"):
        assert f"| {check}" in table, table
    assert "FAILED" not in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| check")]
    assert all(float(line.split("|")[3]) > 0 for line in rows if "---" not in line)
