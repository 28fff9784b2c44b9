"""Why the model says what it says: class activation maps, the animal's foreground, the background-attention
scores and the causal check."""
