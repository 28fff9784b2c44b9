"""Every bench script still runs: its ``--smoke`` mode (tiny sizes, the real code paths) as a subprocess started
from a temporary folder, its output and caches there too. A change that breaks a bench fails here; numbers stay
out: a smoke run says that a bench works, never how fast anything is."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def smoke(script: str, tmp_path: Path, timeout: int = 300) -> str:
    """stdout of ``bench/<script> --smoke``; fails with its stderr where it exits with an error."""
    env = dict(os.environ, WHALEAUDIT_BENCH_OUT=str(tmp_path / "out"), PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, str(BENCH / script), "--smoke"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"bench/{script} --smoke exited with {done.returncode}:\n{done.stderr[-4000:]}"
    return done.stdout


def test_data_bench_smoke(real_labels, real_photos, tmp_path):
    out = smoke("bench_data.py", tmp_path)
    assert "| measurement" in out and "1024 px JPEGs to 128 px" in out


@pytest.mark.slow
def test_precompute_bench_smoke(real_labels, real_photos, tmp_path):
    out = smoke("precompute.py", tmp_path)
    assert "| method" in out and "pytorch-grad-cam" in out and "CPU features:" in out
    assert "| precompute stage" in out and "| foreground" in out   # CPU time per photo, stage by stage
    assert "| photos" in out and "2400x1600" in out   # the full-size rows beside the 128 px ones
    assert not list((tmp_path / "out").rglob("*.partial"))


@pytest.mark.slow
def test_score_bench_smoke(real_photos, tmp_path):
    out = smoke("score.py", tmp_path)
    assert "| bar" in out and "real photos: automatic foreground" in out


@pytest.mark.slow
def test_demo_bench_smoke(tmp_path):
    out = smoke("demo.py", tmp_path)
    assert "| step" in out and "| species" in out


@pytest.mark.slow
def test_dashboard_bench_smoke(real_labels, real_photos, tmp_path):
    out = smoke("dashboard.py", tmp_path)
    rows = {line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ")}
    assert {"overview", "species", "top_losses", "heatmap", "review"} <= rows  # every page ran at both sizes
    assert "300: server start" in out and "3,000: server start" in out and "peak memory" in out


@pytest.mark.slow
def test_train_bench_smoke(real_labels, real_photos, tmp_path):
    out = smoke("train.py", tmp_path)
    assert "| photos" in out and "resized-photo cache" in out and "no cache" in out and "goal:" in out
    assert list((tmp_path / "out" / "train" / ".cache" / "resized").rglob("*.npy"))  # the cache was filled


@pytest.mark.slow
def test_concepts_bench_smoke(real_labels, real_photos, tmp_path):
    out = smoke("concepts.py", tmp_path)
    assert "| cue" in out and "logo" in out and "band" in out and "date" in out
    assert "logit gain by place" in out and re.search(r"(top|bottom)-(left|right) [+-]\d", out)  # the logo's corners
    assert re.search(r"[+-]\d+\.\d \(\d+; (\d\.\d\d|nan)\)", out)   # a place's marked photos and their AUROC
    assert "## Over 2 trainings" in out and "cue concepts' places, by training seed" in out
    assert "## Control:" in out and (tmp_path / "out" / "concepts" / "smoke" / "control-sheet.png").is_file()
    assert "| precompute" in out and "with evidence and concepts" in out
