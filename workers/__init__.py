"""Celery task modules: thin entry points that load rows by id and call ``agents`` services."""
