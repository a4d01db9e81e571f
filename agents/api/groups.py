"""The ``viewers`` and ``operators`` groups, kept in step with the agents app's models after every migrate.

Viewers may read everything (``view_<model>``); operators may also run and act (``add_<model>`` and
``change_<model>``), never delete. Only Django's default model permissions are granted: a custom permission a model
declares (revealing a secret, say) is left for an administrator to give. Permissions are only added, so a new
model's permissions reach both groups; one an administrator removes by hand comes back at the next migrate (make a
group of your own for a narrower role).
"""
from django.db import DEFAULT_DB_ALIAS

VIEWERS = "viewers"
OPERATORS = "operators"
#: The default permissions (by verb) each group holds on every model of the agents app.
GROUP_VERBS = {VIEWERS: ("view",), OPERATORS: ("view", "add", "change")}


def api_groups_ensure(*, using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    """Create the groups if missing and give them their permissions (a ``post_migrate`` receiver)."""
    from django.contrib.auth.models import Group, Permission

    permissions = list(Permission.objects.using(using).filter(content_type__app_label="agents")
                       .select_related("content_type"))
    for name, verbs in GROUP_VERBS.items():
        group, _ = Group.objects.using(using).get_or_create(name=name)
        group.permissions.add(*(
            permission for permission in permissions
            if permission.codename in {f"{verb}_{permission.content_type.model}" for verb in verbs}
        ))
