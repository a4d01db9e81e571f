"""Security: credentials stored encrypted, and the audit log of what operators did."""
from django.core.validators import RegexValidator
from django.db import models

from .teams import team_field

#: A secret's name, as a definition refers to it (``{"secret": "NAME"}``).
SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}\Z"
SECRET_NAME_RULE = "must start with a letter or '_' and hold at most 100 letters, digits, '_', '.' or '-'"


class Secret(models.Model):
    """A credential (token, password, connection URL) stored encrypted with the keys in AGENTS_ENCRYPTION_KEYS.

    Definitions name it as ``{"secret": "NAME"}``; its value is read only by the code that uses it and is never
    shown back in admin, the API or a command's output.
    """

    name = models.CharField(
        max_length=100, unique=True,
        validators=[RegexValidator(SECRET_NAME_PATTERN, f"A secret's name {SECRET_NAME_RULE}.")],
    )
    team = team_field()
    ciphertext = models.TextField(help_text="A Fernet token: the value encrypted under one of AGENTS_ENCRYPTION_KEYS.")
    description = models.TextField(blank=True, help_text="What the secret is for (never the value).")
    hosts = models.JSONField(
        default=list, blank=True,
        help_text="The hosts this secret may be sent to in a header (names, lower case); empty: wherever the call's "
                  "allow-list admits.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, help_text="When the value or description was last set.")
    rotated_at = models.DateTimeField(
        null=True, blank=True, help_text="When the value was last re-encrypted under the newest key."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class AuditEntry(models.Model):
    """One action an operator (a web, admin or API user, or ``cli:<OS user>``) took, and on what."""

    actor = models.CharField(max_length=200, help_text="A username, or 'cli:<OS user>' for a management command.")
    action = models.CharField(max_length=100, help_text="What was done, e.g. 'workflow_run.cancel'.")
    object_type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=100, blank=True)
    summary = models.CharField(max_length=500)
    detail = models.JSONField(default=dict, blank=True)
    trace_id = models.CharField(max_length=32, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["created_at"], name="audit_entry_time_idx"),
            models.Index(fields=["actor", "created_at"], name="audit_entry_actor_idx"),
            models.Index(fields=["action", "created_at"], name="audit_entry_action_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.actor} {self.action} {self.object_type} {self.object_id}".strip()
