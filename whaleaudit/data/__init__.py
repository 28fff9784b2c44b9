"""Label files, image decoding and species names: what comes in is checked at the door."""
