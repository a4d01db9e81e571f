"""Django's admin app, configured for start-up: its ``admin.py`` modules load with the URL routes, not at start."""
from django.contrib.admin.apps import SimpleAdminConfig

from agents.core.zones import timezone_choices_lazy

# The first app's module, so this runs before any model is made: the crontab time zone's choices (django_celery_beat)
# are made when first read instead of in every process's start.
timezone_choices_lazy()


class AdminConfig(SimpleAdminConfig):
    """``django.contrib.admin``, its model admins loaded by ``agentsite.urls`` (``admin.autodiscover()``) rather than
    at start: a command or a worker never serves a page, and the admin's forms and views are a fifth of the start-up.
    Its system checks still see every model admin: the check loads them first. The site is the project's own, its
    sign-in form limited per client address like the API (``agents.api.login``)."""

    # A dotted path: the site's module (auth forms and views) loads with the first use of ``admin.site``, not at start.
    default_site = "agents.api.login.FailureLimitedAdminSite"

    def ready(self):
        from django.contrib.admin.checks import check_dependencies
        from django.core import checks

        checks.register(check_dependencies, checks.Tags.admin)
        checks.register(admin_models_check, checks.Tags.admin)


def admin_models_check(app_configs, **kwargs):
    """Django's model-admin checks, over every registered admin (loaded here when nothing has loaded them yet)."""
    from django.contrib import admin
    from django.contrib.admin.checks import check_admin_app

    admin.autodiscover()
    return check_admin_app(app_configs, **kwargs)
