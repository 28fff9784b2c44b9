"""The command line: help for every command, exit codes, and audit = reuse-or-train then precompute."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _helpers_engine import tiny_dataset, tiny_model

from whaleaudit import cli, workspace
from whaleaudit.audit.store import open_audit, write_store
from whaleaudit.columns import IMAGE_COLUMNS

COMMANDS = ["train", "precompute", "merge", "audit", "concepts", "export", "foreground", "demo", "info", "jobs", "dashboard"]


def test_the_help_tests_cover_every_command():
    verbs = next(a for a in cli.parser()._actions if a.dest == "command").choices
    assert sorted(verbs) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m whaleaudit {command}")


def test_usage_errors_exit_2(capsys):
    for argv in ([], ["fly"], ["precompute", "--labels", "x.csv"], ["audit", "--labels", "x", "--causal", "2"]):
        with pytest.raises(SystemExit) as done:
            cli.main(argv)
        assert done.value.code == 2, argv
    assert "between 0 and 1" in capsys.readouterr().err


def test_a_whaleaudit_error_exits_1_with_its_message_and_no_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-m", "whaleaudit", "info", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: {tmp_path / 'nowhere'}: no audit here.")
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_the_cache_goes_into_the_workspace_unless_set(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTAI_HOME", raising=False)
    monkeypatch.setenv("TORCH_HOME", "/somewhere/else")
    monkeypatch.setenv("WHALEAUDIT_HOME", str(tmp_path))
    workspace.use_cache()
    assert os.environ["FASTAI_HOME"] == str(tmp_path / ".cache" / "fastai_home")
    assert os.environ["TORCH_HOME"] == "/somewhere/else"


def test_info_summarises_an_audit(tmp_path, capsys):
    n = 4
    frame = pd.DataFrame({c: [""] * n for c in IMAGE_COLUMNS})
    frame = frame.assign(idx=range(n), image=[f"{i}.jpg" for i in range(n)], species="orca", split=["valid"] * 2 + ["train"] * 2,
                         status=["ok", "ok", "ok", "error"], label_idx=[0, 0, 0, 0], pred_idx=[0, 1, 0, -1],
                         correct=[True, False, True, False])
    for c in IMAGE_COLUMNS[IMAGE_COLUMNS.index("prob_pred"):]:
        if c not in ("correct", "fg_source"):
            frame[c] = np.nan
    manifest = {"classes": ["orca", "dolphin"], "dataset": {"image_root": str(tmp_path), "label_file": "l.csv"},
                "cam": {"method": "exact-cam", "layer": "layer4"}, "input_size": 128,
                "model": {"path": "models/m.pth", "arch": "resnet18", "head": "cam", "pretrained": False}}
    write_store(tmp_path / "a", frame, np.zeros((n, 2), np.float32), np.zeros((n, 2, 4, 4), np.float16),
                np.zeros((n, 64, 64), bool), manifest, mask_size=64)
    assert cli.main(["info", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "images:   4 (3 ok, 1 failed)" in out and "classes:  2 (orca, dolphin)" in out
    assert "accuracy: 0.667 on 3 labelled images; 0.500 on 2 validation images" in out
    assert "CAM:      exact-cam at layer4, 4x4 cells, 128 px input" in out and "models/m.pth (resnet18, cam head" in out
    manifest["model"]["path"] = None  # an audit of a Learner in a notebook
    write_store(tmp_path / "b", frame, np.zeros((n, 2), np.float32), np.zeros((n, 2, 4, 4), np.float16),
                np.zeros((n, 64, 64), bool), manifest, mask_size=64)
    assert cli.main(["info", str(tmp_path / "b")]) == 0
    assert "model:    a Learner in memory (resnet18, cam head" in capsys.readouterr().out


@pytest.mark.slow
def test_audit_reuses_a_model_trained_alike_and_precomputes(tmp_path, capsys):
    pkl = tiny_model("cam")  # trained with these settings on this dataset
    argv = ["audit", "--labels", str(tiny_dataset()), "--model-out", str(pkl), "--epochs", "1", "--lr", "0.01",
            "--train-bs", "8", "--size", "64", "--no-pretrained", "--out", str(tmp_path / "audit"),
            "--workers", "0", "--cam-layer", "layer3", "--quiet"]
    mtime = pkl.stat().st_mtime
    assert cli.main(argv) == 0
    assert pkl.stat().st_mtime == mtime  # not trained again
    err = capsys.readouterr().err
    assert f"reusing {pkl.with_suffix('.pth')}" in err and "audit written" in err
    audit = open_audit(tmp_path / "audit")
    assert audit.manifest["model"]["path"] == str(pkl.with_suffix(".pth")) and len(audit.images) == 24
    assert audit.manifest["cam"]["layer"] == "layer3" and audit.cams.shape[2:] == (4, 4)
