"""Benchmarks that print JSON lines (``make bench``); never run as tests."""
