"""Training checkpoints: a killed :func:`whaleaudit.model.train.train` resumes from its last finished epoch.

After every epoch the training writes one file, ``<model>.checkpoint/state.pth``, through a temporary file
renamed into place: the weights, the optimizer's state, the epochs done and their history, the random states
(python, numpy, torch, and each fastai data loader's own generator) and a key made of the training options, the
dataset's fingerprint and the split. A run whose key matches resumes from it; the folder goes once the export is
written. Everything in the file is a tensor or a plain value, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import json
import logging
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from ..files import atomic_write_bytes

log = logging.getLogger(__name__)

FORMAT = "whaleaudit-checkpoint/1"
STATE = "state.pth"


def folder(model_out: Path) -> Path:
    """``models/x.pkl`` -> ``models/x.checkpoint``."""
    return Path(model_out).with_suffix(".checkpoint")


class Checkpoint:
    """The checkpoint of one training run: ``key`` (options, dataset fingerprint, split) says which run."""

    def __init__(self, model_out: Path, key: dict):
        self.folder = folder(model_out)
        self.key = json.dumps(key, sort_keys=True, default=str)

    def save(self, learn, epoch: int, history: list[dict]) -> None:
        """Record the state after ``epoch`` finished epochs (called at the end of each epoch)."""
        smooth = learn.recorder.smooth_loss
        state = {"format": FORMAT, "key": self.key, "epoch": epoch, "history": json.dumps(history),
                 "model": learn.model.state_dict(), "opt": learn.opt.state_dict()["state"],
                 "smooth_loss": {"count": smooth.count, "val": smooth.val}, "random": _random_states(learn)}
        buffer = io.BytesIO()
        torch.save(_plain(state), buffer)
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.folder / STATE, buffer.getvalue())

    def load(self) -> dict | None:
        """The saved state of this run, or None: no checkpoint, or one of another run (said in a warning)."""
        path = self.folder / STATE
        if not path.exists():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            ok = state["format"] == FORMAT
            key = json.loads(state["key"])
        except Exception as e:  # noqa: BLE001 - any damage means: train from the start
            return self._ignore(f"it cannot be read ({type(e).__name__}: {e})")
        if not ok:
            return self._ignore(f"its format is {state['format']!r}, not {FORMAT!r}")
        if state["key"] != self.key:
            return self._ignore(f"it was made {_difference(key, json.loads(self.key))}")
        state["history"] = json.loads(state["history"])
        return state

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _ignore(self, why: str) -> None:
        msg = (f"ignoring the training checkpoint {self.folder}: {why}; training starts from the first epoch "
               "(the checkpoint is replaced after it).")
        warnings.warn(msg, stacklevel=3)
        log.warning(msg)


def restore(learn, state: dict) -> None:
    """Put the weights, the optimizer's state and the random states back; ``learn.opt`` must exist, in the phase
    (frozen or not) that the checkpoint was saved in."""
    learn.model.load_state_dict(state["model"])
    device = learn.dls.device  # where the fit moves the model: the optimizer's state must be there already
    opt_state = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in s.items()} for s in state["opt"]]
    learn.opt.load_state_dict({"hypers": learn.opt.hypers, "state": opt_state})
    _set_random_states(learn, state["random"])


def restore_smooth_loss(learn, state: dict) -> None:
    """The Recorder's running training loss (it only feeds the logged numbers), after the Recorder reset it."""
    learn.recorder.smooth_loss.count = state["smooth_loss"]["count"]
    learn.recorder.smooth_loss.val = state["smooth_loss"]["val"]


def _plain(obj):
    """fastai's tensor subclasses as plain tensors, which a weights-only load accepts."""
    if torch.is_tensor(obj):
        return obj.detach().as_subclass(torch.Tensor)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


def _random_states(learn) -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {"python": random.getstate(), "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                      gauss),
              "torch": torch.get_rng_state(), "train_loader": learn.dls.train.rng.getstate(),
              "valid_loader": learn.dls.valid.rng.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_random_states(learn, states: dict) -> None:
    random.setstate(states["python"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    learn.dls.train.rng.setstate(states["train_loader"])
    learn.dls.valid.rng.setstate(states["valid_loader"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _difference(saved: dict, wanted: dict) -> str:
    """In words, how the checkpoint's key differs from this run's."""
    if saved.get("dataset") != wanted.get("dataset"):
        return "from another dataset (its fingerprint differs)"
    options, now = saved.get("options", {}), wanted.get("options", {})
    changed = [f"{k} {options.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(options) | set(now))
               if options.get(k) != now.get(k)]
    if changed:
        return "with other training options (" + ", ".join(changed) + ")"
    return "with another split of the images (an image became readable or unreadable since)"
