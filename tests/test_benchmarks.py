"""benchmarks/gpu.sh --cpu-smoke: the GPU benchmark's own code at toy shapes, so it cannot rot."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_sh_cpu_smoke_writes_every_section(tmp_path):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "TMPDIR": str(tmp_path),
    }
    r = subprocess.run(
        [
            "bash",
            str(ROOT / "benchmarks" / "gpu.sh"),
            "--cpu-smoke",
            "--out",
            str(tmp_path / "res"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    files = list((tmp_path / "res").glob("gpu-cpu-smoke-*.md"))
    assert len(files) == 1, r.stderr[-2000:]
    text = files[0].read_text()
    assert r.returncode == 0, text[-3000:]
    assert "FAILED" not in text
    for title in (
        "## bench_loss (bf16)",
        "## synthetic world",
        "## lsap store build",
        "## bench_train",
        "## bf16 vs fp32 loss agreement",
        "## OLMo-core (CE head / LSAP head / LSAP online)",
    ):
        assert title in text, title
    assert "| 1000 | 64 |" in text  # a bench_loss row
    assert "tokens/s in the build loop" in text and "selection logits float32" in text
    for mode in ("ce", "lsap", "store"):
        assert f"\n| {mode} | " in text, mode
    assert (
        "\n| lsap0 | " in text and "base toy (vocab 1024)" in text
    )  # the OLMo-core section's table
    assert "store / ce step time" in text and "max rel. loss difference over 5 steps" in text
    assert not any(
        p.name.startswith("lsap-gpu-bench.") for p in tmp_path.iterdir()
    )  # scratch removed
