"""Work whose worker process dies while running it (killed, out of memory, a crash in native code): the worker
hands its message out again at once (``task_reject_on_worker_lost``) and the next delivery takes the work over. Each
area counts those deaths on what it runs (``process_deaths``); at ``AGENTS_PROCESS_DEATHS`` the next delivery fails
it, saying so, instead of running it again, so work that kills its process every time does not go round forever."""
from django.conf import settings
from django.db.models import Case, F, Q, Value, When


def process_deaths_max() -> int:
    """Deaths of the worker process after which the next delivery fails the work: ``AGENTS_PROCESS_DEATHS``."""
    return settings.AGENTS_PROCESS_DEATHS


def process_deaths_error(deaths: int, *, doing: str, last_on: str) -> str:
    """What work fails with when its worker process died ``deaths`` times ``doing`` it (``running``, ``handling``),
    the last time on ``last_on`` (``worker w1@host:4242``, ``agent w1@host:data``)."""
    return f"its worker process died {deaths} times while {doing} it (killed, or out of memory); last on {last_on}"


class DeathsCounted:
    """The parts of a guarded claim's update that count a death of the worker process: ``taken_over`` (a ``Q`` on
    the row as it was before the update) says the claim takes over a run whose process died; ``gives_up``, that the
    takeover reaches ``AGENTS_PROCESS_DEATHS``: the delivery then runs nothing and fails the work, keeping what the
    run that died last wrote (its worker, its start) for the failure to name."""

    def __init__(self, *, taken_over: Q):
        self.gives_up = taken_over & Q(process_deaths__gte=process_deaths_max() - 1)
        # At most the limit: two copies taking over after the last death count it once (the failure names the limit).
        self.deaths = F("process_deaths") + Case(
            When(taken_over & Q(process_deaths__lt=process_deaths_max()), then=1), default=0)

    def unless_giving_up(self, field: str, value) -> Case:
        """``field`` set to ``value`` by the claim, or kept as it was by the one that gives up."""
        return Case(When(self.gives_up, then=F(field)), default=Value(value))

