"""WhaleAudit: audit an image dataset through the eyes of the model trained on it.

The public names below are imported on first use (PEP 562), so ``import whaleaudit`` and ``whaleaudit --help``
stay quick and load no torch; ``whaleaudit.WhaleAudit`` is the notebook API (:mod:`whaleaudit.notebook`).
"""

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_PUBLIC = {
    "WhaleAudit": "whaleaudit.notebook",
    "load_dataset": "whaleaudit.data.dataset",
    "dataset_from_frame": "whaleaudit.data.dataset",
    "Dataset": "whaleaudit.data.dataset",
    "train": "whaleaudit.model.train",
    "load_model": "whaleaudit.model.load",
    "learner_model": "whaleaudit.model.load",
    "precompute": "whaleaudit.audit.precompute",
    "open_audit": "whaleaudit.audit.store",
    "Audit": "whaleaudit.audit.store",
    "Review": "whaleaudit.audit.review",
    "REASONS": "whaleaudit.audit.review",
    "flagged_csv": "whaleaudit.audit.export",
    "ForegroundProvider": "whaleaudit.explain.foreground",
    "build_demo": "whaleaudit.demo.build",
    "WhaleAuditError": "whaleaudit.errors",
    "DatasetError": "whaleaudit.errors",
    "ImageError": "whaleaudit.errors",
    "ModelError": "whaleaudit.errors",
    "StoreError": "whaleaudit.errors",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'whaleaudit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
