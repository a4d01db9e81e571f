"""agentsite: a Celery-based agent system; the Celery app is importable as ``agentsite.celery_app``."""
import os

# numpy's OpenBLAS starts a thread per core when numpy is imported, and each spins for about 0.1 s of CPU waiting
# for work that never comes here: no agent does large matrix products, and a worker's processes already use every
# core. That spin took a core from PostgreSQL and from the command's own threads in every process that loads numpy
# (a data run, a decision batch, a worker). One thread unless the environment asks for more.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from .celery import app as celery_app  # noqa: E402  (after the environment above: it may load numpy)

__all__ = ("celery_app",)
