"""Evaluation commands and metrics, one module per network."""
