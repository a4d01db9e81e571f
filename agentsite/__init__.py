"""agentsite: a Celery-based agent system; the Celery app is importable as ``agentsite.celery_app``."""
from .celery import app as celery_app

__all__ = ("celery_app",)
