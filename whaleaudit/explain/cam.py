"""Class activation maps for every class of a batch, from one pass through the body.

The model is laid out as fastai lays it out, ``Sequential(body, head)``; the maps live on the body's output
``A`` (``K`` channels, ``h x w`` cells: 4 x 4 for resnet18 at 128 px). The head decides the method:

- ``"cam"`` head (avg-pool -> Dropout -> Linear): the exact CAM ``M_c = W_c · A + b_c`` at every cell. The
  logit is ``W_c · mean(A) + b_c``, so the spatial *mean* of ``M_c`` equals the logit exactly: the map is
  the logit, spread over the cells where it comes from.
- any other head (fastai's default: concat-pool, BN, two linear layers with a ReLU): Grad-CAM at the body
  output. Channel weights ``w_ck = mean_ij d logit_c / d A_kij``, map ``M_c = sum_k w_ck A_k``. The stored
  map is raw: no ReLU, no rescaling, so negative evidence stays visible and maps compare across images.
  The body runs once without autograd; only the small head is differentiated, for all classes at once
  (one batched backward), so the cost stays close to a plain forward pass.

Finer maps (``layer="layer3"``): Grad-CAM at the output of the body's second-to-last stage (resnet18's
layer3, 8 x 8 at 128 px), differentiating the last stage and the head for every class (one batched backward
of K classes through layer4: several forward passes' worth of work at 26 classes). A cue beside the animal
is placed better at 8 x 8, at several times the default precompute's cost with many classes, so the body's
output stays the default (the README's "Known limits" gives the figures from ``bench/score.py``).

The evidence concepts (:mod:`whaleaudit.explain.concepts`) need the layer3 maps of two classes only per photo,
the predicted and the labelled one: :func:`predict_with_evidence` makes them by one backward of the predicted
class through the last stage (and another for the photos it gets wrong), beside the default maps, and
returns the layer3 features too.

How far a map cell's evidence reaches (:func:`spread`) is measured on the model itself: the softening of the
background-attention score (:mod:`whaleaudit.explain.score`) is this wide.

Everything is computed and returned in float32 on the input's device: bf16 moved the maps by more than the
1% they are allowed (docs/performance.md).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..errors import ModelError
from ..model.layout import head_kind, split

log = logging.getLogger(__name__)

#: Where the maps are read: the body's output (the default) or the stage before it (see the module docstring).
LAYERS = ("layer4", "layer3")


def for_inference(model: nn.Module, device: torch.device) -> nn.Module:
    """The model as the precompute runs it: each BatchNorm of the body folded into the convolution before it
    (the same numbers to float rounding; 10% faster in one measurement on the 2-core CPU, within the noise in
    another), in channels_last memory layout.

    The body's last stage is folded apart from the rest, so that layer3 maps can still be read between the two.
    A part that ``torch.fx`` cannot trace (a user's unusual architecture) runs unfolded. The model must be in
    eval mode: folding uses the running statistics.
    """
    from torch.fx.experimental.optimization import fuse

    if model.training:
        raise ModelError("for_inference needs the model in eval mode (model.eval()).")
    body, head = split(model)
    parts = [body[:-1], body[-1]] if isinstance(body, nn.Sequential) and len(body) > 1 else [body]
    folded = []
    for part in parts:
        try:
            folded.append(fuse(part))
        except Exception as e:  # noqa: BLE001 -- tracing can fail in many ways; the unfolded part gives the same maps
            log.info(f"BatchNorm not folded into the convolutions ({type(e).__name__}: {e}); running it as is")
            folded.append(part)
    return nn.Sequential(nn.Sequential(*folded), head).eval().to(device, memory_format=torch.channels_last)


def cam_method(head: str, layer: str = "layer4") -> str:
    return "exact-cam" if head == "cam" and layer == "layer4" else "grad-cam"


def stages(body: nn.Module, layer: str) -> tuple[nn.Module, nn.Module]:
    """(the body up to ``layer``, the rest of it): for "layer3", all stages but the last, and the last."""
    if layer not in LAYERS:
        raise ModelError(f"layer={layer!r}: choose one of {list(LAYERS)}.")
    if layer == "layer4":
        return body, nn.Identity()
    if not isinstance(body, nn.Sequential) or len(body) < 2:
        raise ModelError(f"layer3 maps need the body as a Sequential of stages (fastai's resnet body); this one is "
                         f"{type(body).__name__}. Use the body's output (layer4) instead.")
    return body[:-1], body[-1]


def predict_with_maps(model: nn.Module, x: torch.Tensor, *, layer: str = "layer4"):
    """``(logits [B, C], maps [B, C, h, w])``, float32, for every class at ``layer`` (see :data:`LAYERS`); the
    model must be in eval mode.

    Works inside or outside ``torch.inference_mode``: the Grad-CAM path leaves it for the head's backward.
    """
    if model.training:
        raise ModelError("predict_with_maps needs the model in eval mode (model.eval()): dropout and "
                         "batch statistics would make the maps random.")
    body, head = split(model)
    if layer != "layer4":
        front, rest = stages(body, layer)
        return _grad_cam(front, nn.Sequential(rest, head), x)
    if head_kind(model) == "cam":
        with torch.inference_mode():
            act = body(x)
            return head(act), _exact_cam(head, act)
    return _grad_cam(body, head, x)


def _exact_cam(head: nn.Module, act: torch.Tensor) -> torch.Tensor:
    """``W·A + b`` of the exact-CAM head's one Linear layer over the body's output ``act``: every class's map."""
    linear = next(m for m in head.modules() if isinstance(m, nn.Linear))
    maps = torch.einsum("ck,bkhw->bchw", linear.weight, act)
    return maps if linear.bias is None else maps + linear.bias[None, :, None, None]


def _leaf(front: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``front(x)`` computed without autograd, as a leaf the rest of the network is differentiated against; call
    it outside inference mode (a tensor made in inference mode cannot enter autograd, so ``x`` is copied)."""
    if x.is_inference():
        x = x.clone()
    with torch.no_grad():
        act = front(x)
    return act.detach().requires_grad_(True)


def _grad_cam(body: nn.Module, head: nn.Module, x: torch.Tensor):
    with torch.inference_mode(False):
        act = _leaf(body, x)
        with torch.enable_grad():
            logits = head(act)
        maps = _class_maps(logits, act, _every_class(logits))
    return logits.detach(), maps


def predict_with_evidence(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, *, layer: str = "layer4"):
    """:func:`predict_with_maps` plus what the evidence concepts need, from the same passes:
    ``(logits [B, C], maps [B, C, h, w], evidence [B, 2, h3, w3], features [B, K3, h3, w3])``, float32.

    ``evidence`` is the layer3 Grad-CAM of each photo's predicted class (row 0) and of its labelled class
    ``labels`` (row 1; zeros where the label is -1, a class the model does not know): one backward of the
    predicted class through the last stage, and a second pass through it for the photos whose label differs
    from the prediction only, instead of all ``C`` classes; ``features`` is the layer3 feature map itself
    (the cells the concepts cluster). With ``layer="layer3"`` the maps of every class are made anyway and
    ``evidence`` is their two rows.
    """
    if model.training:
        raise ModelError("predict_with_evidence needs the model in eval mode (model.eval()): dropout and "
                         "batch statistics would make the maps random.")
    body, head = split(model)
    front, last = stages(body, "layer3")
    labels = labels.to(x.device)
    with torch.inference_mode(False):
        features = _leaf(front, x)
        with torch.enable_grad():
            act = last(features)
            logits = head(act)
        pred = logits.argmax(dim=1)
        if layer == "layer3":
            maps = _class_maps(logits, features, _every_class(logits))
            chosen = torch.stack([pred, labels.clamp(min=0)], dim=1)
            evidence = maps.gather(1, chosen[:, :, None, None].expand(-1, -1, *maps.shape[2:]))
        else:
            if head_kind(model) == "cam":
                maps = _exact_cam(head, act.detach())
            else:
                maps = _class_maps(logits, act, _every_class(logits), keep=True)
            evidence = _class_maps(logits, features, nn.functional.one_hot(pred, logits.shape[1])[None]
                                   .to(logits.dtype)).expand(-1, 2, -1, -1).clone()
            other = (labels >= 0) & (labels != pred)
            if other.any():
                apart = features[other].detach().requires_grad_(True)
                with torch.enable_grad():
                    apart_logits = head(last(apart))
                select = nn.functional.one_hot(labels[other], logits.shape[1])[None].to(logits.dtype)
                evidence[other, 1] = _class_maps(apart_logits, apart, select)[:, 0]
        evidence[:, 1] *= (labels >= 0)[:, None, None]
    return logits.detach(), maps, evidence, features.detach()


def _every_class(logits: torch.Tensor) -> torch.Tensor:
    """``[C, B, C]``: row ``c`` selects logit ``c`` of every photo (one backward for all classes)."""
    n_classes = logits.shape[1]
    return torch.eye(n_classes, dtype=logits.dtype, device=logits.device)[:, None, :].expand(-1, len(logits), -1)


def _class_maps(logits: torch.Tensor, act: torch.Tensor, select: torch.Tensor, keep: bool = False) -> torch.Tensor:
    """Grad-CAM ``[B, J, h, w]`` at ``act`` of the logit combinations ``select`` ``[J, B, C]`` (one-hot rows:
    class ``c`` of every photo, or one chosen class per photo), in one batched backward; ``keep`` keeps the
    graph for another backward."""
    with torch.enable_grad():
        (grads,) = torch.autograd.grad(logits, act, grad_outputs=select, is_grads_batched=True, retain_graph=keep)
    return torch.einsum("jbk,bkhw->bjhw", grads.mean(dim=(3, 4)), act.detach())


def spread(model: nn.Module, x: torch.Tensor, layer: str = "layer4") -> float:
    """How far the evidence of one map cell reaches into the photo, in map cells: the standard deviation (the
    mean of the two axes) of the map's effective receptive field (Luo et al., 2016), measured on the photos ``x``.

    That is the spread, about its centroid, of ``|d sum_k A_k(centre) / d x|`` (summed over colour channels
    and photos), where ``A`` is the feature map at ``layer`` and ``centre`` its central cell. A network puts
    evidence about this far from what it comes from, so the score softens the foreground by it (the values
    measured on our models are in the README). Rounded to 0.01 cell, so the same photos give the same value on
    any run.
    """
    front, _ = stages(split(model)[0], layer)
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone().float().requires_grad_(True)
        act = front(x)
        h, w = act.shape[-2:]
        (grad,) = torch.autograd.grad(act[:, :, h // 2, w // 2].sum(), x)
    field = grad.abs().sum(dim=(0, 1)).double().cpu()   # [H, W]
    total = field.sum()
    if not total > 0:
        raise ModelError(f"the maps at {layer} are the same for every photo (they do not depend on the input), so "
                         "they cannot show where the evidence lies. Check that the model file holds trained weights.")

    def std(weights: torch.Tensor, cell: float) -> float:
        at = torch.arange(len(weights), dtype=torch.float64)
        mean = (weights * at).sum() / total
        return float(((weights * (at - mean) ** 2).sum() / total).sqrt()) / cell

    return round((std(field.sum(1), x.shape[-2] / h) + std(field.sum(0), x.shape[-1] / w)) / 2, 2)
