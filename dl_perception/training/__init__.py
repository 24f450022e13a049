"""Training loops, one module per network."""
