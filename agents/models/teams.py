"""Teams: a Django group marked as a team owns definitions (workflows, rule sets, pipelines, sources, checks,
routes, silences, responses, triggers, secrets) and, through them, what they produce (runs, decisions, alerts,
datasets). Its members see and change only their teams' objects; superusers see all."""
from django.contrib.auth.models import Group
from django.db import models

#: The team objects belong to when nobody names one (and that every object stored before teams belonged to).
DEFAULT_TEAM = "default"


class Team(models.Model):
    """Marks a group as a team; the group's members are the team's members."""

    group = models.OneToOneField(Group, on_delete=models.CASCADE, related_name="team")
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["group__name"]

    def __str__(self) -> str:
        return self.group.name

    @property
    def name(self) -> str:
        return self.group.name


def default_team() -> int:
    """The id of the default team, made on first use (the default of every ``team`` field)."""
    group, _ = Group.objects.get_or_create(name=DEFAULT_TEAM)
    team, _ = Team.objects.get_or_create(group=group)
    return team.pk


#: An id no team has: the default team's while it is not made yet (``default_team_found``).
NO_TEAM_YET = 0


def default_team_found() -> int:
    """The id of the default team, read only (``default_team`` makes it): ``NO_TEAM_YET`` before it is made, so a
    check that writes nothing (a validation) finds no row of it."""
    found = Team.objects.filter(group__name=DEFAULT_TEAM).values_list("pk", flat=True).first()
    return found if found is not None else NO_TEAM_YET


def team_field(**kwargs) -> models.ForeignKey:
    """The ``team`` foreign key every team-owned model carries: the default team unless one is named."""
    return models.ForeignKey(
        Team, on_delete=models.PROTECT, related_name="+", default=default_team,
        help_text="The team that owns this; only its members (and superusers) see and change it.", **kwargs,
    )
