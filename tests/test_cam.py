"""Maps: the exact CAM averages to the logits; Grad-CAM equals plain autograd; folding and inference mode change
neither; a map cell's spread is its receptive field."""

import math

import numpy as np
import pytest
import torch
from _helpers_engine import SIZE, draw, tiny_model
from torch import nn

from whaleaudit.errors import ModelError
from whaleaudit.explain.cam import for_inference, predict_with_maps, spread
from whaleaudit.model.layout import head_kind
from whaleaudit.model.load import build_model, load_model

pytestmark = pytest.mark.slow  # trains the tiny models on first use


def batch(n=6, seed=1) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    images = np.stack([draw(rng, i % 3, shape=(SIZE, SIZE)) for i in range(n)])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)


def trained(head):
    model, sidecar = load_model(tiny_model(head).with_suffix(".pth"))
    assert sidecar["head"] == head == head_kind(model)
    return model


def test_exact_cam_maps_average_to_the_logits():
    model, x = trained("cam"), batch()
    logits, maps = predict_with_maps(model, x)
    assert maps.shape == (len(x), 2, 2, 2) and maps.dtype == logits.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x), rtol=0, atol=1e-5)
    torch.testing.assert_close(maps.mean(dim=(2, 3)), logits, rtol=0, atol=1e-4)
    assert maps.std(dim=(2, 3)).min() > 0  # a map, not a constant


@pytest.mark.parametrize("head, layer", [("fastai", "layer4"), ("fastai", "layer3"), ("cam", "layer3")])
def test_grad_cam_equals_plain_autograd_on_the_full_model(head, layer):
    """Reference: per image, per class, d logit / d A through the whole model via a hook on the layer that gives
    A (the body, or its second-to-last stage for layer3 maps: 4 x 4 here instead of 2 x 2)."""
    model, x = trained(head), batch()
    logits, maps = predict_with_maps(model, x, layer=layer)
    assert maps.shape == (len(x), 2) + ((2, 2) if layer == "layer4" else (4, 4))
    captured = {}
    hooked = model[0] if layer == "layer4" else model[0][-2]
    handle = hooked.register_forward_hook(lambda m, i, out: captured.update(A=out))
    try:
        for b in range(len(x)):
            for c in range(logits.shape[1]):
                out = model(x[b:b + 1])
                (grad,) = torch.autograd.grad(out[0, c], captured["A"])
                A = captured["A"].detach()[0]
                reference = (grad[0].mean(dim=(1, 2))[:, None, None] * A).sum(0)
                torch.testing.assert_close(maps[b, c], reference, rtol=1e-4, atol=1e-5)
                torch.testing.assert_close(logits[b, c], out[0, c].detach(), rtol=1e-5, atol=1e-5)
    finally:
        handle.remove()
    with pytest.raises(ModelError, match="layer5"):
        predict_with_maps(model, x, layer="layer5")


@pytest.mark.parametrize("head", ["cam", "fastai"])
def test_maps_are_the_same_inside_inference_mode(head):
    model, x = trained(head), batch(4)
    expected = predict_with_maps(model, x)
    with torch.inference_mode():
        got = predict_with_maps(model, x.clone())
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=0)
    with torch.no_grad():  # and both are the network's own answer, not merely the same one
        torch.testing.assert_close(got[0], model(x), rtol=0, atol=1e-5)
    if head == "cam":
        torch.testing.assert_close(got[1].mean(dim=(2, 3)), got[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("head", ["cam", "fastai"])
@pytest.mark.parametrize("layer", ["layer4", "layer3"])
def test_folding_batchnorm_for_inference_keeps_the_maps_and_logits(head, layer):
    model, x = trained(head), batch(6)
    fast = for_inference(model, torch.device("cpu"))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast[0].modules())    # folded, not kept
    assert any(isinstance(m, nn.BatchNorm2d) for m in model[0].modules())       # the original is untouched
    channels_last = x.contiguous(memory_format=torch.channels_last)
    for e, g in zip(predict_with_maps(model, x, layer=layer), predict_with_maps(fast, channels_last, layer=layer)):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)
    with pytest.raises(ModelError, match="eval mode"):
        for_inference(model.train(), torch.device("cpu"))


def test_head_kind_reads_the_head_and_refuses_other_layouts():
    assert head_kind(build_model("cam", 3)) == "cam"
    assert head_kind(build_model("fastai", 3)) == "fastai"
    wide = nn.Sequential(build_model("cam", 3)[0], nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                                               nn.Linear(2048, 3)))
    assert head_kind(wide) == "fastai"  # pooling to 2x2 is no exact CAM
    with pytest.raises(ModelError, match="Sequential\\(body, head\\)"):
        head_kind(nn.Linear(3, 3))
    with pytest.raises(ModelError, match="eval"):
        predict_with_maps(build_model("cam", 3).train(), batch(2))


def test_spread_is_the_receptive_field_of_a_map_cell():
    """A map cell that sums a 9 x 9 box of pixels (stride 8) spreads by that box's standard deviation, in cells,
    wherever the map is read from and on any photos."""
    box = nn.Conv2d(3, 1, 9, stride=8, padding=4, bias=False)
    nn.init.ones_(box.weight)
    later = nn.Conv2d(1, 1, 3, stride=2, padding=1)
    for body, layer in [(nn.Sequential(box), "layer4"), (nn.Sequential(box, later), "layer3")]:
        model = nn.Sequential(body, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 2))).eval()
        for x in (torch.rand(4, 3, 64, 64), torch.zeros(1, 3, 64, 64)):
            assert spread(model, x, layer) == round(math.sqrt((9 ** 2 - 1) / 12) / 8, 2)
    dead = nn.Conv2d(3, 1, 1)
    nn.init.zeros_(dead.weight)
    with pytest.raises(ModelError, match="the same for every photo"):
        spread(nn.Sequential(nn.Sequential(dead), model[1]), torch.rand(2, 3, 8, 8))


@pytest.mark.parametrize("layer", ["layer4", "layer3"])
def test_spread_of_a_trained_model_is_the_same_folded_and_inside_inference_mode(layer):
    model = trained("cam").eval()
    folded = for_inference(model, torch.device("cpu"))
    with torch.inference_mode():
        inside = spread(folded, batch(), layer)
    assert spread(model, batch(), layer) == inside > 0
