"""Admin page of the circuit breakers: every dependency with failures or an open circuit, and a reset for each.

Breakers are not models (their state lives in Redis, or a file under var/), so the page is served from the admin
site's own URLs, as the trace page is, and listed in the Agents section of the index beside the models.
"""
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.views.decorators.http import require_http_methods

from agents.admin.common import status_badge
from agents.core.breakers import CLOSED, HALF_OPEN, OPEN, breaker_reset, breakers_list
from agents.exceptions import AgentsError

#: The permission that allows a reset: whoever may change monitoring checks may reset a breaker.
RESET_PERMISSION = "agents.change_check"
#: The workflow badge colour (``wf-<status>`` CSS class) of each breaker state.
STATE_COLOURS = {CLOSED: "succeeded", OPEN: "failed", HALF_OPEN: "running"}
STATE_LABELS = {CLOSED: "closed", OPEN: "open", HALF_OPEN: "half-open"}


@require_http_methods(["GET", "POST"])
def breakers_view(request):
    """GET: every breaker with its state, failures, when it opened and its next trial. POST ``key``: reset it."""
    can_reset = request.user.has_perm(RESET_PERMISSION)
    if request.method == "POST":
        if not can_reset:
            raise PermissionDenied(f"resetting a circuit breaker needs the permission {RESET_PERMISSION}")
        key = request.POST.get("key", "").strip()
        if not key:
            messages.error(request, "Choose the circuit breaker to reset.")
        else:
            try:
                before = breaker_reset(key)
            except AgentsError as error:
                messages.error(request, str(error))
            else:
                messages.success(request, f"Circuit breaker {key} reset: it was {STATE_LABELS[before['state']]} "
                                          f"with {before['failures']} failure{'s' if before['failures'] != 1 else ''}; "
                                          "calls go through again.")
        return redirect("admin:agents_breakers")
    problem, rows = "", []
    try:
        rows = [{**state, "badge": status_badge(STATE_COLOURS[state["state"]], STATE_LABELS[state["state"]])}
                for state in breakers_list()]
    except AgentsError as error:
        problem = str(error)
    context = {
        **admin.site.each_context(request),
        "title": "Circuit breakers",
        "rows": rows,
        "problem": problem,
        "can_reset": can_reset,
        "threshold": settings.AGENTS_BREAKER_FAILURES,
        "cooldown_s": settings.AGENTS_BREAKER_COOLDOWN_S,
    }
    return TemplateResponse(request, "admin/agents/breakers.html", context)


def _add_breaker_page(site: admin.AdminSite) -> None:
    """Serve the page at ``<admin>/agents/breakers/`` on ``site`` behind its staff login, and list it in the
    Agents section of the index and the app page (the site's URL list and app list, since no model holds it)."""
    site_urls, site_app_list = site.get_urls, site.get_app_list

    def get_urls():
        return [path("agents/breakers/", site.admin_view(breakers_view), name="agents_breakers"), *site_urls()]

    def get_app_list(request, app_label=None):
        app_list = site_app_list(request, app_label)
        for app in app_list:
            if app["app_label"] == "agents":
                app["models"].append({
                    "name": "Circuit breakers", "object_name": "CircuitBreaker", "perms": {"view": True},
                    "admin_url": reverse("admin:agents_breakers", current_app=site.name), "add_url": None,
                    "view_only": True, "model": None,
                })
                app["models"].sort(key=lambda model: model["name"])
        return app_list

    site.get_urls = get_urls
    site.get_app_list = get_app_list


_add_breaker_page(admin.site)
