"""Training, export and loading: what the files hold, what loads safely, what is refused and why."""

import json
import shutil
import urllib.error

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from _helpers_engine import SIZE, make_dataset, tiny_dataset, tiny_model

from whaleaudit.data.dataset import load_dataset, stratified_split
from whaleaudit.errors import ModelError
from whaleaudit.files import file_sha256
from whaleaudit.model.load import load_model
from whaleaudit.model.train import readable_rows, train

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
        assert sidecar["files"][kind]["sha256"] == file_sha256(pkl.with_suffix("." + kind))
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
        assert sidecar["sha256"] == file_sha256(path)
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
