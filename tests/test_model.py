"""Training, export and loading: what the files hold, what loads safely, what is refused and why."""

import functools
import hashlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from _helpers_engine import SIZE, make_dataset, tiny_dataset, tiny_model, workdir

from whaleaudit.data.dataset import load_dataset, stratified_split
from whaleaudit.errors import ModelError
from whaleaudit.model.load import load_model
from whaleaudit.model.train import readable_rows, train, trained_alike, training_options

pytestmark = pytest.mark.slow  # trains the tiny models on first use


@pytest.mark.parametrize("head", ["cam", "fastai"])
def test_train_exports_learner_weights_and_sidecar(head):
    pkl = tiny_model(head)
    sidecar = json.loads(pkl.with_suffix(".json").read_text())
    dataset = load_dataset(tiny_dataset())
    assert sidecar["classes"] == ["bottlenose_dolphin", "killer_whale"]
    assert (sidecar["head"], sidecar["size"], sidecar["arch"]) == (head, SIZE, "resnet18")
    assert sidecar["pretrained"] is False and sidecar["normalize"] is None
    assert sidecar["dataset"]["fingerprint"] == dataset.fingerprint()
    for kind in ("pkl", "pth"):
        assert sidecar["files"][kind]["sha256"] == hashlib.sha256(pkl.with_suffix("." + kind).read_bytes()).hexdigest()
    training = sidecar["training"]
    assert [e["phase"] for e in training["history"]] == ["frozen", "unfrozen"]  # fine_tune(1): 1 frozen + 1
    assert all(0 <= e["accuracy"] <= 1 and np.isfinite(e["valid_loss"]) for e in training["history"])
    assert training["valid_accuracy"] == training["history"][-1]["accuracy"] and training["train_seconds"] > 0
    is_valid = stratified_split(dataset.frame["species"], valid_pct=0.2, seed=42)
    assert sidecar["split"]["valid"] == dataset.frame["image"][is_valid].tolist()
    assert sidecar["split"]["train"] == dataset.frame["image"][~is_valid].tolist()


@pytest.mark.parametrize("head", ["cam", "fastai"])
def test_weights_file_and_pickle_load_the_same_network(head, monkeypatch):
    pkl = tiny_model(head)
    monkeypatch.setenv("WHALEAUDIT_HOME", str(pkl.parent.parent))
    x = torch.rand(3, 3, SIZE, SIZE)
    outputs = []
    for path in (pkl.with_suffix(".pth"), pkl):
        model, sidecar = load_model(path)
        assert not model.training and sidecar["head"] == head and sidecar["size"] == SIZE
        assert sidecar["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        with torch.no_grad():
            outputs.append(model(x))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


def test_a_pickle_from_outside_models_needs_trust(tmp_path):
    pkl = tmp_path / "elsewhere.pkl"
    shutil.copy(tiny_model("fastai"), pkl)
    with pytest.raises(ModelError, match="runs code") as refused:
        load_model(pkl)
    assert "--trust" in str(refused.value) and "elsewhere.pth" in str(refused.value)
    model, sidecar = load_model(pkl, trust=True)  # no sidecar beside it: read from the learner itself
    assert sidecar["classes"] == ["bottlenose_dolphin", "killer_whale"] and sidecar["size"] == SIZE
    assert sidecar["head"] == "fastai" and sidecar["normalize"] is None


def test_a_plain_state_dict_needs_the_class_names(tmp_path):
    pth = tmp_path / "plain.pth"
    shutil.copy(tiny_model("cam").with_suffix(".pth"), pth)
    with pytest.raises(ModelError, match="--classes"):
        load_model(pth)
    with pytest.raises(ModelError, match="2 outputs but 3 classes are named"):
        load_model(pth, classes=["a", "b", "c"])
    with pytest.warns(UserWarning, match="no sidecar"):
        model, sidecar = load_model(pth, classes=["dolphin", "orca"])
    assert sidecar["head"] == "cam" and sidecar["classes"] == ["dolphin", "orca"]
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="weights-only"):
        load_model(tmp_path / "junk.pth", classes=["a", "b"])


def test_a_sidecar_of_other_weights_is_refused(tmp_path):
    pkl = tiny_model("cam")
    for suffix in (".pth", ".json"):
        shutil.copy(pkl.with_suffix(suffix), tmp_path / ("m" + suffix))
    torch.save({k: v + 1 for k, v in torch.load(tmp_path / "m.pth").items()}, tmp_path / "m.pth")
    with pytest.raises(ModelError, match="sha256 differs"):
        load_model(tmp_path / "m.pth")


def test_offline_pretrained_falls_back_to_random_weights_and_unreadable_images_are_left_out(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights.DEFAULT.__class__, "get_state_dict", offline)
    labels = make_dataset(tmp_path, n_per_species=4)
    (tmp_path / "images" / "001001.jpg").unlink()
    (tmp_path / "images" / "001002.jpg").write_text("not an image")
    with pytest.warns(UserWarning) as caught:
        train(load_dataset(labels), out=tmp_path / "m.pkl", epochs=1, bs=4, size=32, workers=0, progress=False)
    messages = [str(w.message) for w in caught]
    assert any("ImageNet weights for resnet18 could not be had" in m and "random weights" in m for m in messages)
    assert any("2 of 8 images are missing or unreadable" in m and "001001.jpg" in m for m in messages)
    sidecar = json.loads((tmp_path / "m.json").read_text())
    assert sidecar["pretrained"] is False and sidecar["normalize"] is None
    assert sidecar["training"]["options"]["pretrained"] is True  # asked for, not had
    assert sidecar["training"]["dropped_images"]["count"] == 2
    assert sorted(sidecar["split"]["train"] + sidecar["split"]["valid"]) == ["000000.jpg", "000001.jpg", "000002.jpg",
                                                                              "000003.jpg", "001000.jpg", "001003.jpg"]


def test_a_local_torchvision_state_dict_starts_the_body(tmp_path):
    torch.manual_seed(3)
    start = torchvision.models.resnet18().state_dict()
    torch.save(start, tmp_path / "resnet18.pth")
    labels = make_dataset(tmp_path, n_per_species=3)
    learn = train(load_dataset(labels), out=tmp_path / "m.pkl", epochs=1, lr=1e-12, bs=4, size=32,
                  weights=tmp_path / "resnet18.pth", workers=0, progress=False)
    torch.testing.assert_close(learn.model[0][0].weight.detach().cpu(), start["conv1.weight"], rtol=0, atol=1e-6)
    sidecar = json.loads((tmp_path / "m.json").read_text())
    assert sidecar["pretrained"] is True and sidecar["weights"] == str((tmp_path / "resnet18.pth").resolve())
    assert sidecar["normalize"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    torch.save({"fc.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ModelError, match="not a torchvision resnet18 state dict"):
        train(load_dataset(labels), out=tmp_path / "m2.pkl", epochs=1, weights=tmp_path / "other.pth", workers=0)


def test_readable_rows_names_what_it_leaves_out(tmp_path):
    labels = make_dataset(tmp_path, n_per_species=3)
    (tmp_path / "images" / "000001.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"1 of 6 images .*000001\.jpg \(.*\)"):
        frame, dropped = readable_rows(load_dataset(labels))
    assert "000001.jpg" not in frame["path"].tolist() and len(frame) == 5 and dropped["count"] == 1
    assert isinstance(frame, pd.DataFrame) and frame.index.tolist() == list(range(5))


def test_an_image_over_the_pixel_limit_is_left_out_not_trained_as_black(tmp_path, monkeypatch):
    """Pillow only warns between its pixel limit and twice it; decoding refuses such an image (it would train
    as a black square), so the check before training must refuse it too."""
    from PIL import Image

    labels = make_dataset(tmp_path, n_per_species=3)            # 48 x 60 = 2,880 pixels each
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)       # 2,000 < 2,880 < 4,000: the warning zone
    with pytest.warns(UserWarning, match=r"6 of 6 images .*000000\.jpg \(000000\.jpg: too many pixels"):
        frame, dropped = readable_rows(load_dataset(labels))
    assert frame.empty and dropped["count"] == 6


def test_bad_training_arguments_are_refused_before_any_work(tmp_path):
    dataset = load_dataset(tiny_dataset())
    with pytest.raises(ModelError, match="head='vgg'"):
        train(dataset, out=tmp_path / "m.pkl", head="vgg")
    with pytest.raises(ModelError, match=r"\.pkl file"):
        train(dataset, out=tmp_path / "m.pth")
    with pytest.raises(ModelError, match="no such model file"):
        load_model(tmp_path / "missing.pth")


# --- resuming a stopped training -----------------------------------------------------------------------------

#: Two frozen epochs and eight unfrozen ones: a stop can fall inside either of fine_tune's fits or between them.
RESUMABLE = dict(epochs=8, freeze_epochs=2, lr=1e-2, bs=8, size=32, pretrained=False, workers=0)
TOTAL_EPOCHS = 10


@functools.cache
def resumable_reference() -> Path:
    """The uninterrupted run that every resumed one must equal."""
    out = workdir() / "models" / "resumable-reference.pkl"
    train(load_dataset(tiny_dataset()), out=out, progress=False, **RESUMABLE)
    return out


def assert_same_training(model: Path, reference: Path) -> None:
    """Bit for bit the same weights, and the same per-epoch history (the sidecar's timing aside)."""
    weights, expected = torch.load(model.with_suffix(".pth")), torch.load(reference.with_suffix(".pth"))
    assert weights.keys() == expected.keys()
    for name in expected:
        assert torch.equal(weights[name], expected[name]), name
    sidecars = [json.loads(p.with_suffix(".json").read_text()) for p in (model, reference)]
    for s in sidecars:
        s["training"].pop("train_seconds")
        s.pop("files")
    assert sidecars[0] == sidecars[1]


class Stop(Exception):
    """Stands for a kill in the middle of an epoch."""


def stop_at(share: float, seen: list):
    def progress(fraction):
        seen.append(fraction)
        if fraction >= share:
            raise Stop("stopped")
    return progress


def test_a_stopped_training_resumes_from_its_last_epoch_to_the_same_model(tmp_path, caplog):
    """Stopped in the frozen fit, right after it, and in the unfrozen fit: each run resumes from the last finished
    epoch with the weights, optimizer, schedule and random states restored, so the model is the uninterrupted one."""
    reference = resumable_reference()
    dataset, out = load_dataset(tiny_dataset()), tmp_path / "m.pkl"
    state = out.with_suffix(".checkpoint") / "state.pth"
    first_share = []
    for share, finished in ((0.15, 1), (0.25, 2), (0.75, 7)):  # 2 training batches an epoch, 20 in all
        seen = []
        with pytest.raises(Stop):
            train(dataset, out=out, progress=stop_at(share, seen), **RESUMABLE)
        first_share.append(seen[0])
        assert torch.load(state, weights_only=True)["epoch"] == finished and not out.exists()
    caplog.set_level(logging.INFO, logger="whaleaudit")
    seen = []
    train(dataset, out=out, progress=seen.append, **RESUMABLE)
    assert "resuming from epoch 7 of 10" in caplog.text
    assert first_share == [0.05, 0.15, 0.25] and seen[0] == 0.75  # each run trained only what was left
    assert not state.parent.exists()  # gone once the export is written
    assert_same_training(out, reference)


def test_a_checkpoint_of_another_run_is_ignored_with_a_message(tmp_path):
    dataset, out = load_dataset(tiny_dataset()), tmp_path / "m.pkl"
    options = dict(RESUMABLE, epochs=2, freeze_epochs=0)
    with pytest.raises(Stop):
        train(dataset, out=out, progress=stop_at(0.6, []), **options)
    seen = []
    with pytest.warns(UserWarning, match=r"ignoring the training checkpoint .*m\.checkpoint: it was made with other "
                                         r"training options \(lr 0\.01 -> 0\.02\); training starts from the first"):
        with pytest.raises(Stop):
            train(dataset, out=out, progress=stop_at(0.6, seen), **dict(options, lr=2e-2))
    assert seen[0] == 0.25  # from the start: the first of 4 batches
    (out.with_suffix(".checkpoint") / "state.pth").write_bytes(b"damaged")
    with pytest.warns(UserWarning, match=r"m\.checkpoint: it cannot be read"):
        train(dataset, out=out, progress=False, **options)
    assert out.with_suffix(".pth").exists() and not out.with_suffix(".checkpoint").exists()


TRAIN = """
from whaleaudit.data.dataset import load_dataset
from whaleaudit.model.train import train
train(load_dataset({labels!r}), out={out!r}, progress=False, **{options!r})
"""


def test_a_training_killed_anywhere_resumes_to_the_same_model(tmp_path):
    """Five SIGKILLs at random moments (each after one more epoch has been saved, at a random point of the next),
    then a run to the end: the model equals the uninterrupted one bit for bit, and nothing half-written ever
    passes for a finished model."""
    reference = resumable_reference()
    dataset, out = load_dataset(tiny_dataset()), tmp_path / "m.pkl"
    state = out.with_suffix(".checkpoint") / "state.pth"
    code = TRAIN.format(labels=str(tiny_dataset()), out=str(out), options=RESUMABLE)
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(torch.get_num_threads()))  # the same sums
    asked = training_options(weights=None, head="cam", seed=42, valid_pct=0.2,
                             **{k: v for k, v in RESUMABLE.items() if k != "workers"})
    rng, kills, epochs_seen = random.Random(19), 0, []
    for _ in range(5):
        before = state.stat().st_ino if state.exists() else None
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        while proc.poll() is None and (not state.exists() or state.stat().st_ino == before):
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=300)
        assert not trained_alike(out, dataset, asked), "a killed run passes for a finished one"
        epochs_seen.append(torch.load(state, weights_only=True)["epoch"])
    assert kills == 5 and epochs_seen == sorted(epochs_seen) and epochs_seen[-1] < TOTAL_EPOCHS
    final = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
    assert final.returncode == 0, final.stderr.decode()
    assert trained_alike(out, dataset, asked) and not state.parent.exists()
    assert_same_training(out, reference)
