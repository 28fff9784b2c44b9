"""An audit on disk: the precompute that builds it, the store that holds it, the review database and exports."""
