"""The admins django-celery-beat and django-celery-results register (periodic tasks and their schedules, task and
group results), registered again with this project's change list (``SafeFilterMixin``): a lookup typed into the
query string that cannot be run, a date drill-down past the calendar's among them, is the redirect of a bad filter
there too, not a server error. Their modules are imported first, so theirs are in place."""
from django.contrib import admin
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask, SolarSchedule
from django_celery_results import admin as results_admin
from django_celery_results.models import GroupResult, TaskResult

from agents.admin.common import SafeFilterMixin


class SuperusersOnly:
    """The site's own Celery rows hold no team: every team's schedules and every task's arguments and results. Only
    superusers see or change them (a team's operator could stop or run another team's schedule, and read its
    tasks' results); teams see their work through the project's own pages."""

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    has_add_permission = has_change_permission = has_delete_permission = has_view_permission


class PeriodicTaskAdmin(SuperusersOnly, SafeFilterMixin, beat_admin.PeriodicTaskAdmin):
    """django-celery-beat's periodic tasks."""


class ClockedScheduleAdmin(SuperusersOnly, SafeFilterMixin, beat_admin.ClockedScheduleAdmin):
    """django-celery-beat's clocked schedules."""


class CrontabScheduleAdmin(SuperusersOnly, SafeFilterMixin, beat_admin.CrontabScheduleAdmin):
    """django-celery-beat's crontab schedules."""


class SolarScheduleAdmin(SuperusersOnly, SafeFilterMixin, beat_admin.SolarScheduleAdmin):
    """django-celery-beat's solar schedules."""


class IntervalScheduleAdmin(SuperusersOnly, SafeFilterMixin, beat_admin.IntervalScheduleAdmin):
    """django-celery-beat's interval schedules."""


class TaskResultAdmin(SuperusersOnly, SafeFilterMixin, results_admin.TaskResultAdmin):
    """django-celery-results' task results."""


class GroupResultAdmin(SuperusersOnly, SafeFilterMixin, results_admin.GroupResultAdmin):
    """django-celery-results' group results."""


for model, model_admin in ((PeriodicTask, PeriodicTaskAdmin), (ClockedSchedule, ClockedScheduleAdmin),
                           (CrontabSchedule, CrontabScheduleAdmin), (SolarSchedule, SolarScheduleAdmin),
                           (IntervalSchedule, IntervalScheduleAdmin), (TaskResult, TaskResultAdmin),
                           (GroupResult, GroupResultAdmin)):
    admin.site.unregister(model)
    admin.site.register(model, model_admin)
