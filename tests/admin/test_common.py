"""What every admin shares (``agents/admin/common.py``): a date drill-down the calendar cannot hold, on any list
with ``date_hierarchy``, redirects with ``?e=1`` as any other bad filter does; before, a year, month or day whose
range ends after 9999-12-31 was a 500."""
import pytest
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from agents.models import AgentTask

pytestmark = pytest.mark.django_db

admin.autodiscover()  # the model admins load with the URL routes: here before the lists are read
#: Every list page with a date drill-down: its URL name and the field drilled into.
DRILLED = sorted(
    (f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist", model_admin.date_hierarchy)
    for model, model_admin in admin.site._registry.items() if model_admin.date_hierarchy
)


def test_the_lists_with_a_date_drill_down_are_all_checked_the_other_apps_too():
    names = {url_name for url_name, _ in DRILLED}

    assert {"admin:agents_agenttask_changelist", "admin:agents_auditentry_changelist",
            "admin:django_celery_results_taskresult_changelist",
            "admin:django_celery_beat_periodictask_changelist"} <= names, names


@pytest.mark.parametrize(("url_name", "field"), DRILLED, ids=[url_name for url_name, _ in DRILLED])
@pytest.mark.parametrize("drill", [
    {"year": "9999"},                               # the range would end in year 10000
    {"year": "9999", "month": "12"},                # ... in January 10000
    {"year": "9999", "month": "12", "day": "31"},   # ... on 10000-01-01
    {"year": "0"},
    {"year": "99999"},
    {"year": "2024", "month": "13"},
    {"year": "2024", "month": "1", "day": "32"},
    {"year": "2024", "month": "2", "day": "30"},
    {"year": "twenty"},
])
def test_a_date_drill_down_outside_the_calendar_redirects_as_a_bad_filter(admin_client, url_name, field, drill):
    url = reverse(url_name)
    query = {f"{field}__{part}": value for part, value in drill.items()}

    response = admin_client.get(url, query)

    assert response.status_code == 302, response.status_code
    assert response["Location"] == f"{url}?e=1"
    assert admin_client.get(response["Location"]).status_code == 200


def test_a_drill_down_to_the_calendar_s_last_month_and_to_today_still_lists(admin_client):
    task = AgentTask.objects.create(agent_type="decision", config={"action": "echo"})
    today = timezone.localtime(task.created_at)
    url = reverse("admin:agents_agenttask_changelist")
    change = reverse("admin:agents_agenttask_change", args=[task.pk])

    last_month = admin_client.get(url, {"created_at__year": "9999", "created_at__month": "11"})
    on_the_day = admin_client.get(url, {"created_at__year": today.year, "created_at__month": today.month,
                                        "created_at__day": today.day})

    assert last_month.status_code == 200 and change not in last_month.content.decode()
    assert on_the_day.status_code == 200 and change in on_the_day.content.decode()
