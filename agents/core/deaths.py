"""Work whose worker process dies while running it (killed, out of memory, a crash in native code): the worker
hands its message out again at once (``task_reject_on_worker_lost``) and the next delivery takes the work over. Each
area counts those deaths on what it runs (``process_deaths``); at ``AGENTS_PROCESS_DEATHS`` the next delivery fails
it, saying so, instead of running it again, so work that kills its process every time does not go round forever."""
from django.conf import settings


def process_deaths_max() -> int:
    """Deaths of the worker process after which the next delivery fails the work: ``AGENTS_PROCESS_DEATHS``."""
    return settings.AGENTS_PROCESS_DEATHS


def process_deaths_error(deaths: int, *, doing: str, last_on: str) -> str:
    """What work fails with when its worker process died ``deaths`` times ``doing`` it (``running``, ``handling``),
    the last time on ``last_on`` (``worker w1@host:4242``, ``agent w1@host:data``)."""
    return f"its worker process died {deaths} times while {doing} it (killed, or out of memory); last on {last_on}"
