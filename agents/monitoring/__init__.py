"""Monitoring agents."""
