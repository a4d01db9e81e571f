"""Decisions agents."""
