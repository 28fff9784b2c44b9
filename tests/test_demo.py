"""The demo end to end, in a tiny version: every step runs, the audit opens and covers every photo, reruns resume."""

import json

import pandas as pd
import pytest

from whaleaudit.audit.store import MANIFEST, open_audit
from whaleaudit.demo.build import TINY, build_demo


@pytest.mark.slow
def test_tiny_demo_builds_a_complete_audit_and_resumes(tmp_path):
    calls = []
    out = build_demo(root=tmp_path, recipe=TINY,
                     progress=lambda fraction, text, images_per_second=None: calls.append((fraction, text)))

    assert out == tmp_path / "audits" / "demo"
    audit = open_audit(out)
    truth = pd.read_csv(tmp_path / "demo_data" / "truth.csv")
    assert sorted(audit.images["image"]) == sorted(truth["image"])
    assert (audit.images["status"] == "ok").all()
    # scored against the true animal masks the drawing saved, not an estimate
    assert (audit.images["fg_source"] == "mask").all()
    areas = audit.images.merge(truth, on="image")
    assert (areas["fg_area"] - areas["animal_area"]).abs().max() < 0.02
    assert audit.manifest["model"]["pretrained"] is False and audit.manifest["model"]["head"] == "cam"
    assert set(audit.images["split"]) == {"train", "valid"}

    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert len({text for _, text in calls}) >= 4  # three steps and the end
    # the bar moves within the long steps, not only between them (the tiny audit is a single batch)
    assert len({f for f, text in calls if text.startswith("Training")}) > 2
    assert len({f for f, text in calls if text.startswith("Computing")}) == 2
    sidecar = json.loads((tmp_path / "models" / "demo.json").read_text())
    assert [e["phase"] for e in sidecar["training"]["history"]] == ["unfrozen"] * TINY.epochs  # no frozen epoch

    # a rerun finds every step done and redoes none of them
    model = tmp_path / "models" / "demo.pth"
    stamps = {p: p.stat().st_mtime_ns for p in (model, out / MANIFEST, tmp_path / "demo_data" / "labels.csv")}
    assert build_demo(root=tmp_path, recipe=TINY) == out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # a lost audit is rebuilt from the model already trained; an unfinished dataset is drawn again
    (tmp_path / "demo_data" / "synth.json").unlink()
    (out / MANIFEST).unlink()
    build_demo(root=tmp_path, recipe=TINY)
    assert len(open_audit(out).images) == len(truth)
    assert (tmp_path / "demo_data" / "synth.json").exists()
