"""The species classifier: training it with fastai and loading it (weights-only by default)."""
