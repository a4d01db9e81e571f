"""Who sees what: every team-owned model's path to its team, querysets narrowed to a user's teams, and the team a
new object goes to. A user sees the objects of the teams (groups marked as teams) they belong to; a superuser, and
code that acts for nobody in particular (commands, workers), sees all."""
from contextlib import contextmanager
from contextvars import ContextVar

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models import Model, Q, QuerySet

from agents.core.audit import audit_record
from agents.exceptions import TeamError
from agents.models import (
    AgentMessage,
    AgentTask,
    Alert,
    DataRun,
    Dataset,
    DataSource,
    Decision,
    DecisionModelVersion,
    Event,
    EventTypeDeclaration,
    IncidentResponse,
    MessageReceipt,
    MapItem,
    Metric,
    Notification,
    NotificationRoute,
    Pipeline,
    PipelineVersion,
    ResponseRule,
    RuleSet,
    RuleSetVersion,
    Secret,
    ShadowComparison,
    Silence,
    StepRun,
    Team,
    Trigger,
    TriggerFiring,
    WorkflowBackfill,
    WorkflowDefinition,
    WorkflowRun,
    WorkflowSignal,
    WorkflowVersion,
    default_team,
)
from agents.models import Check as HealthCheck

#: Each team-owned model, and the lookup from it to its team.
TEAM_PATHS: dict[type[Model], str] = {
    WorkflowDefinition: "team", WorkflowVersion: "definition__team", WorkflowRun: "version__definition__team",
    StepRun: "run__version__definition__team", WorkflowBackfill: "definition__team",
    MapItem: "run__version__definition__team", WorkflowSignal: "run__version__definition__team",
    RuleSet: "team", RuleSetVersion: "ruleset__team", DecisionModelVersion: "ruleset__team", Decision: "ruleset__team",
    ShadowComparison: "decision__ruleset__team",
    Pipeline: "team", PipelineVersion: "pipeline__team", DataRun: "version__pipeline__team", Dataset: "team",
    DataSource: "team",
    HealthCheck: "team", Metric: "health_check__team", Alert: "health_check__team",
    Notification: "alert__health_check__team", NotificationRoute: "team", Silence: "team", ResponseRule: "team",
    IncidentResponse: "rule__team",
    Trigger: "team", TriggerFiring: "trigger__team", Event: "team", EventTypeDeclaration: "team",
    AgentTask: "team", AgentMessage: "team", MessageReceipt: "message__team",
    Secret: "team",
}
#: The model of each kind of definition that work names by key: an agent task kind's config key, the key
#: ``action_definitions`` gives for an action's params (agent tasks, triggers and response rules).
DEFINITION_MODELS: dict[str, type[Model]] = {
    "workflow": WorkflowDefinition, "ruleset": RuleSet, "pipeline": Pipeline, "check": HealthCheck,
}
#: The team whose definition the current code runs (a pipeline's run, a route's notice): what it may use (secrets,
#: stored sources, datasets) must be that team's. None: code acting for no team in particular.
team_acting: ContextVar[int | None] = ContextVar("team_acting", default=None)

#: Models whose rows may belong to no team, and are then seen by every team (system events).
_TEAMLESS_SHARED = {Event}


def sees_all(user) -> bool:
    """Whether ``user`` sees every team's objects: superusers, and None (a command or worker acting for no one)."""
    return user is None or bool(getattr(user, "is_superuser", False))


def teams_of(user) -> QuerySet:
    """The teams ``user`` belongs to (every team for a superuser or None)."""
    if sees_all(user):
        return Team.objects.all()
    if not getattr(user, "is_authenticated", False):
        return Team.objects.none()
    return Team.objects.filter(group__user=user)


def team_scoped(rows: QuerySet, user) -> QuerySet:
    """``rows`` narrowed to the teams of ``user``; unchanged for models no team owns and for those who see all."""
    path = TEAM_PATHS.get(rows.model)
    if path is None or sees_all(user):
        return rows
    mine = Q(**{f"{path}__in": teams_of(user)})
    if rows.model in _TEAMLESS_SHARED:
        mine |= Q(**{f"{path}__isnull": True})
    return rows.filter(mine)


def team_sees(user, obj: Model) -> bool:
    """Whether ``user`` may see ``obj`` (a team-owned row, or a row no team owns)."""
    if TEAM_PATHS.get(type(obj)) is None or sees_all(user):
        return True
    return team_scoped(type(obj).objects.filter(pk=obj.pk), user).exists()


def team_named(name: str) -> Team:
    """The team called ``name`` (``TeamError`` naming it when there is none)."""
    team = Team.objects.select_related("group").filter(group__name=name).first()
    if team is None:
        raise TeamError(f"no team {name!r} (a team is a group marked as one: admin > Teams, or "
                        f"`manage.py teams add {name}`)")
    return team


def team_default() -> Team:
    """The default team, made on first use."""
    return Team.objects.select_related("group").get(pk=default_team())


def team_for_new(user, name: str | None = None) -> Team:
    """The team a new object made by ``user`` belongs to: the one named (which must be one of theirs), else their
    only team; the default team for a superuser or for no user. ``TeamError`` says what to name otherwise."""
    if name:
        team = team_named(name)
        if not sees_all(user) and not teams_of(user).filter(pk=team.pk).exists():
            raise TeamError(f"you are not a member of team {name!r}")
        return team
    if sees_all(user):
        return team_default()
    mine = list(teams_of(user).select_related("group")[:10])
    if len(mine) == 1:
        return mine[0]
    if not mine:
        raise TeamError("you belong to no team: ask an administrator to add you to one")
    raise TeamError(f"you belong to several teams ({', '.join(sorted(t.name for t in mine))}): name one")


def same_team(owner_team_id: int, other, *, what: str) -> None:
    """Refuse (``TeamError``) when ``other`` (a team-owned row) belongs to a team other than ``owner_team_id``."""
    if other is not None and getattr(other, "team_id", owner_team_id) != owner_team_id:
        raise TeamError(_another_team(what))


def definition_team_problem(model: type[Model], name: str, team_id: int | None, *, what: str,
                            missing: str | None = None) -> str | None:
    """Why team ``team_id`` may not use ``model``'s definition called ``name``: ``"<what> belongs to another team"``
    when another team owns it, ``missing`` when there is none (None: the caller lets that pass, or says it
    elsewhere); None when it is the team's own, or ``team_id`` is None (code acting for no team in particular)."""
    if team_id is None and missing is None:
        return None  # acting for no team, and a missing one let pass: the database need not be asked
    owner = model.objects.filter(name=name).values_list("team_id", flat=True)[:1]
    if not owner:
        return missing
    return _another_team(what) if team_id is not None and owner[0] != team_id else None


def _another_team(what: str) -> str:
    return f"{what} belongs to another team"


def owned_get_or_create(model: type[Model], *, name: str, team: Team | None, what: str, **defaults):
    """``model``'s row called ``name`` for a load into ``team``, made in ``team`` (default: the default team) when
    there is none. ``TeamError`` when it exists in another team than the one named: a load never moves an object
    between teams, and names are unique across teams."""
    row, created = model.objects.get_or_create(
        name=name, defaults={**defaults, "team": team if team is not None else team_default()})
    if not created and team is not None and row.team_id != team.pk:
        raise TeamError(_another_team(f"{what} {name!r}"))
    return row, created


@contextmanager
def acting_for(team_id: int | None):
    """Run the block as team ``team_id``: secrets, stored sources and datasets it reads must be that team's."""
    token = team_acting.set(team_id)
    try:
        yield
    finally:
        team_acting.reset(token)


def acting_scoped(rows: QuerySet) -> QuerySet:
    """``rows`` (of a team-owned model with a ``team`` field) narrowed to the acting team, if one acts."""
    team_id = team_acting.get()
    return rows if team_id is None else rows.filter(team_id=team_id)


def team_create(*, name: str, description: str = "") -> tuple[Team, bool]:
    """Mark group ``name`` as a team (the group is made when missing); return it and whether it is new. An existing
    team keeps its description (``team_describe`` changes it)."""
    name = (name or "").strip()
    if not name or len(name) > 150:
        raise TeamError("a team's name must be 1 to 150 characters")
    with transaction.atomic():
        group, _ = Group.objects.get_or_create(name=name)
        team, created = Team.objects.get_or_create(group=group, defaults={"description": description})
        if created:
            audit_record("team.create", "team", team.pk, f"made group {name} a team", team=name)
    return team, created


def team_describe(*, team: str, description: str) -> bool:
    """Set team ``team``'s description; whether it changed (False: it was that already)."""
    with transaction.atomic():
        found = Team.objects.select_for_update().filter(pk=team_named(team).pk).first()
        if found.description == description:
            return False
        found.description = description
        found.save(update_fields=["description"])
        audit_record("team.describe", "team", found.pk, f"changed the description of team {team}", team=team)
    return True


def team_member_set(*, team: str, username: str, member: bool = True) -> bool:
    """Add ``username`` to team ``team`` (or, with ``member`` False, take them out); whether that changed anything
    (False: they were a member already, or were not one to take out)."""
    found = team_named(team)
    model = get_user_model()
    user = model.objects.filter(**{model.USERNAME_FIELD: username}).first()
    if user is None:
        raise TeamError(f"no user {username!r}")
    if user.groups.filter(pk=found.group_id).exists() == member:
        return False
    (user.groups.add if member else user.groups.remove)(found.group)
    audit_record("team.member", "team", found.pk, f"{'added' if member else 'removed'} {username} "
                 f"{'to' if member else 'from'} team {team}", team=team, user=username, member=member)
    return True
