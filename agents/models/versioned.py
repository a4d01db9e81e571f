"""The versioned-definition pair every area's definitions use: a named definition, and its immutable versions,
each identified by the hash of its normalised content (workflows, pipelines, rule sets)."""
from django.db import models

from .teams import team_field


class Definition(models.Model):
    """A named definition; its content lives in versions."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    team = team_field()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class DefinitionVersion(models.Model):
    """One immutable version of a definition; a subclass adds the foreign key to its definition, named after it,
    and the constraints that make ``number`` and ``content_hash`` unique per definition."""

    number = models.PositiveIntegerField(help_text="1, 2, ... per definition, in the order loaded.")
    content_hash = models.CharField(max_length=64, help_text="sha256 of the normalised definition.")
    spec = models.JSONField(help_text="The normalised definition, as validated.")
    source = models.TextField(blank=True, help_text="The text the version was loaded from.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True
