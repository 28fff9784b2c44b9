"""Species-name normalisation for the Happywhale label file.

The competition's `train.csv` spells some species two ways; the audit keeps the raw label and
groups by the normalised one, so 30 raw labels become 26 species.
"""

import re

HAPPYWHALE_FIXES = {
    "bottlenose_dolpin": "bottlenose_dolphin",
    "kiler_whale": "killer_whale",
    "globis": "short_finned_pilot_whale",
    "pilot_whale": "short_finned_pilot_whale",
}


def normalise_species(raw: str) -> str:
    """Lower-case, snake_case, then apply the known Happywhale misspelling fixes."""
    name = re.sub(r"[^0-9a-z]+", "_", str(raw).strip().lower()).strip("_")
    return HAPPYWHALE_FIXES.get(name, name)
