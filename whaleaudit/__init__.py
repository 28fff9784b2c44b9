"""WhaleAudit: audit an image dataset through the eyes of the model trained on it."""

__version__ = "0.1.0"
