"""The admins django-celery-beat and django-celery-results register (periodic tasks, task and group results),
registered again with this project's date drill-down (``DateHierarchyMixin``): a year past the calendar's is the
redirect of a bad filter there too, not a server error. Their modules are imported first, so theirs are in place."""
from django.contrib import admin
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import PeriodicTask
from django_celery_results import admin as results_admin
from django_celery_results.models import GroupResult, TaskResult

from agents.admin.common import DateHierarchyMixin


class PeriodicTaskAdmin(DateHierarchyMixin, beat_admin.PeriodicTaskAdmin):
    """django-celery-beat's periodic tasks."""


class TaskResultAdmin(DateHierarchyMixin, results_admin.TaskResultAdmin):
    """django-celery-results' task results."""


class GroupResultAdmin(DateHierarchyMixin, results_admin.GroupResultAdmin):
    """django-celery-results' group results."""


for model, model_admin in ((PeriodicTask, PeriodicTaskAdmin), (TaskResult, TaskResultAdmin),
                           (GroupResult, GroupResultAdmin)):
    admin.site.unregister(model)
    admin.site.register(model, model_admin)
