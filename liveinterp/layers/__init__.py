"""Reusable NNX layers whose parameters carry logical axis names."""
