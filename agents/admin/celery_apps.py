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


class PeriodicTaskAdmin(SafeFilterMixin, beat_admin.PeriodicTaskAdmin):
    """django-celery-beat's periodic tasks."""


class ClockedScheduleAdmin(SafeFilterMixin, beat_admin.ClockedScheduleAdmin):
    """django-celery-beat's clocked schedules."""


class CrontabScheduleAdmin(SafeFilterMixin, beat_admin.CrontabScheduleAdmin):
    """django-celery-beat's crontab schedules."""


class SolarScheduleAdmin(SafeFilterMixin, beat_admin.SolarScheduleAdmin):
    """django-celery-beat's solar schedules."""


class IntervalScheduleAdmin(SafeFilterMixin, beat_admin.IntervalScheduleAdmin):
    """django-celery-beat's interval schedules."""


class TaskResultAdmin(SafeFilterMixin, results_admin.TaskResultAdmin):
    """django-celery-results' task results."""


class GroupResultAdmin(SafeFilterMixin, results_admin.GroupResultAdmin):
    """django-celery-results' group results."""


for model, model_admin in ((PeriodicTask, PeriodicTaskAdmin), (ClockedSchedule, ClockedScheduleAdmin),
                           (CrontabSchedule, CrontabScheduleAdmin), (SolarSchedule, SolarScheduleAdmin),
                           (IntervalSchedule, IntervalScheduleAdmin), (TaskResult, TaskResultAdmin),
                           (GroupResult, GroupResultAdmin)):
    admin.site.unregister(model)
    admin.site.register(model, model_admin)
