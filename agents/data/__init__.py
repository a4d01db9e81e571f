"""Data agents."""
