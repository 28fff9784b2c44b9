"""The drawn demo dataset and the one call that builds its audit."""
