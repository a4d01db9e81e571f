"""Workflows agents."""
