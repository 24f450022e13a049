"""Readers for the dataset layouts the training and evaluation commands take."""
