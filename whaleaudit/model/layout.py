"""fastai's vision model layout, ``Sequential(body, head)``: splitting it, and telling which head it has.

The audit reads the maps off this layout (:mod:`whaleaudit.explain.cam`); the loader records the head's kind.
"""

from __future__ import annotations

from torch import nn

from ..errors import ModelError

_PASS_THROUGH = (nn.Dropout, nn.Flatten, nn.Identity)


def split(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(body, head) of a fastai vision model; anything else is refused with the reason."""
    if not isinstance(model, nn.Sequential) or len(model) != 2:
        raise ModelError(f"expected fastai's Sequential(body, head) layout, got {type(model).__name__} with "
                         f"{len(model) if isinstance(model, nn.Sequential) else 'no'} parts. Export the model "
                         "with fastai's vision_learner (or `python -m whaleaudit train`).")
    return model[0], model[1]


def head_kind(model: nn.Module) -> str:
    """"cam" when the head is global average pooling then one Linear layer (exact CAM), else "fastai"."""
    _, head = split(model)
    leaves = [m for m in head.modules() if not list(m.children()) and not _is_pass_through(m)]
    if (len(leaves) == 2 and isinstance(leaves[0], nn.AdaptiveAvgPool2d)
            and leaves[0].output_size in (1, (1, 1)) and isinstance(leaves[1], nn.Linear)):
        return "cam"
    return "fastai"


def _is_pass_through(m: nn.Module) -> bool:
    return isinstance(m, _PASS_THROUGH) or (type(m).__name__ == "Flatten" and type(m).__module__.startswith("fastai"))
