"""Who may call what: Django model permissions, granted through the ``viewers`` and ``operators`` groups.

Each view names the permission every action needs (``perms = {"list": "view_agent", "cancel":
"change_workflowrun"}``), as the admin's actions do. Anonymous requests are refused with 401; an authenticated
user without the permission gets 403; an action a view does not name is refused to everyone but superusers.
"""
from rest_framework.permissions import SAFE_METHODS, BasePermission


def view_action(request, view) -> str | None:
    """The view's action; for OPTIONS (DRF's ``metadata`` action, asking once per method it describes), the action
    the route runs for that method (``create`` on a list, ``broadcast`` on messages/broadcast/)."""
    action = getattr(view, "action", None)
    if action != "metadata":
        return action
    return (getattr(view, "action_map", None) or {}).get(request.method.lower(), action)


def required_permission(request, view) -> str | None:
    """The ``agents.<codename>`` permission ``view`` needs for this request, or None if it names none."""
    action = view_action(request, view) or request.method.lower()
    codename = getattr(view, "perms", {}).get(action)
    return f"agents.{codename}" if codename else None


class ModelActionPermission(BasePermission):
    """The user holds the model permission the view names for the action.

    Views that name none (the API root, the schema) may be read by anyone who holds a permission of the agents
    app (every viewer and operator), and written by no one but a superuser.
    """

    message = "you do not have the permission this needs; ask an administrator for the viewers or operators group"

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if user.is_superuser or not hasattr(view, request.method.lower()):
            return True  # a method the view has no handler for is answered 405 by the view
        permission = required_permission(request, view)
        if permission is not None:
            return user.has_perm(permission)
        return request.method in SAFE_METHODS and user.has_module_perms("agents")
