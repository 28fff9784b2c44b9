"""One error family, so callers (CLI, dashboard, tests) can tell a user's mistake from a bug.

Every message names the file, row or value at fault and says what to do about it.
"""


class WhaleAuditError(Exception):
    """Base of every error WhaleAudit raises on purpose."""


class DatasetError(WhaleAuditError):
    """The label file or image folder cannot be used as given."""


class ImageError(WhaleAuditError):
    """One image cannot be read; the run reports it and goes on."""


class ModelError(WhaleAuditError):
    """A learner cannot be trained, loaded or trusted."""


class StoreError(WhaleAuditError):
    """An audit store is missing, incomplete or corrupt."""
