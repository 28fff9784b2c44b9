"""Where WhaleAudit keeps what it makes: ``models/``, ``audits/``, ``demo_data/`` and the libraries' caches.

The workspace is the folder named by ``WHALEAUDIT_HOME``, else the current folder, so a checkout used from
its root and an installed package used from a project folder behave alike. Pickled learners load without
``trust`` only from the workspace's ``models/`` folder.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "WHALEAUDIT_HOME"
AUDITS_ENV = "WHALEAUDIT_AUDITS"
CACHE_VARIABLES = ("TORCH_HOME", "FASTAI_HOME", "MPLCONFIGDIR", "TORCHINDUCTOR_CACHE_DIR")


def root() -> Path:
    return Path(os.environ.get(HOME_ENV) or os.getcwd()).resolve()


def models() -> Path:
    return root() / "models"


def audits() -> Path:
    """The audits the dashboard lists: ``WHALEAUDIT_AUDITS`` where set, else ``<workspace>/audits``."""
    return Path(os.environ.get(AUDITS_ENV) or root() / "audits").resolve()


def demo_data() -> Path:
    return root() / "demo_data"


def cache() -> Path:
    """``<workspace>/.cache``: the libraries' caches and WhaleAudit's own (resized photos)."""
    return root() / ".cache"


def use_cache() -> None:
    """Point torch's, fastai's and matplotlib's caches into ``<workspace>/.cache`` where the environment
    leaves them unset, instead of the home folder."""
    for var in CACHE_VARIABLES:
        os.environ.setdefault(var, str(cache() / var.lower()))
