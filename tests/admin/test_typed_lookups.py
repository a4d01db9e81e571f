"""Lookups typed into a change list's query string (``agents/admin/common.py``): one the database or the driver
refuses when the list is counted or fetched (a regular expression PostgreSQL cannot compile, a NUL, a year past the
calendar's on a field that is not the drill-down's) redirects with ``?e=1`` as any other bad filter does, on every
list of the site; before, each was a 500. A list that fails without such lookups still fails loudly."""
import pytest
from django.contrib import admin
from django.contrib.admin import AdminSite
from django.db import DataError
from django.urls import reverse
from django_celery_results.models import TaskResult

from agents.admin import common
from agents.admin.workflows import PoolAdmin
from agents.models import Agent, Pool

pytestmark = pytest.mark.django_db

admin.autodiscover()  # the model admins load with the URL routes: here before the registry is read

#: A list page and a lookup the database refuses, by case. A regular expression is compiled on the first row it is
#: matched against, so those lists have rows (``listed_rows``); a NUL or a year is refused before any row is read.
REFUSED = [
    ("admin:agents_pool_changelist", {"name__regex": "("}),
    ("admin:agents_agent_changelist", {"name__regex": "("}),
    ("admin:django_celery_results_taskresult_changelist", {"task_name__regex": "("}),
    ("admin:agents_workflowrun_changelist", {"status__exact": "\x00"}),
    ("admin:agents_agenttask_changelist", {"status__exact": "\x00"}),
    ("admin:agents_alert_changelist", {"state__exact": "\x00"}),
    ("admin:django_celery_results_taskresult_changelist", {"status__exact": "\x00"}),
    ("admin:agents_agent_changelist", {"created_at__year": "99999"}),
    ("admin:agents_agenttask_changelist", {"started_at__year": "0"}),
    ("admin:agents_pool_changelist", {"updated_at__year": "99999"}),
    ("admin:django_celery_beat_periodictask_changelist", {"last_run_at__year": "0"}),
    ("admin:auth_user_changelist", {"username__regex": "("}),  # the signed-in superuser is its row
    ("admin:authtoken_tokenproxy_changelist", {"key__exact": "\x00"}),
]


@pytest.fixture
def listed_rows(db):
    """A row on each list whose refused lookup is a regular expression."""
    Pool.objects.create(name="blue")
    Agent.objects.create(name="worker-1:decision", agent_type="decision")
    TaskResult.objects.create(task_id="b8d3f5e2", task_name="agents.echo", status="SUCCESS")


@pytest.mark.parametrize(("url_name", "query"), REFUSED, ids=[f"{name}-{next(iter(query))}" for name, query in REFUSED])
def test_a_lookup_the_database_refuses_redirects_as_a_bad_filter(admin_client, listed_rows, url_name, query):
    url = reverse(url_name)

    response = admin_client.get(url, query)

    assert response.status_code == 302, response.status_code
    assert response["Location"] == f"{url}?e=1"
    assert admin_client.get(response["Location"]).status_code == 200  # the test's transaction is still usable
    assert Pool.objects.filter(name="blue").exists()


@pytest.mark.django_db(transaction=True)
def test_a_refused_lookup_redirects_outside_a_transaction_too(admin_client, listed_rows):
    url = reverse("admin:agents_pool_changelist")

    response = admin_client.get(url, {"name__regex": "("})

    assert response.status_code == 302 and response["Location"] == f"{url}?e=1"
    assert admin_client.get(response["Location"]).status_code == 200


def test_a_lookup_the_database_accepts_still_lists(admin_client, listed_rows):
    url = reverse("admin:agents_pool_changelist")
    change = reverse("admin:agents_pool_change", args=[Pool.objects.get(name="blue").pk])

    matched = admin_client.get(url, {"name__regex": "^bl(ue)?$"})
    unmatched = admin_client.get(url, {"name__regex": "^red"})
    plain = admin_client.get(url)

    assert matched.status_code == 200 and change in matched.content.decode()
    assert unmatched.status_code == 200 and change not in unmatched.content.decode()
    assert plain.status_code == 200 and change in plain.content.decode()


def test_every_list_of_the_site_redirects_a_refused_lookup(rf):
    request = rf.get("/")
    unprotected = sorted(
        model._meta.label for model, model_admin in admin.site._registry.items()
        if not issubclass(model_admin.get_changelist(request), common.SafeFilterChangeList)
    )

    assert unprotected == []
    assert len(admin.site._registry) > 40  # the agents app's, Celery's, auth's and the API tokens'


class _BrokenPoolAdmin(PoolAdmin):
    """A defect: a list whose own query fails, whatever the query string says."""

    def get_queryset(self, request):
        return super().get_queryset(request).filter(name__regex="(")


def test_a_list_failing_without_lookups_still_fails_loudly(rf, admin_user, listed_rows):
    model_admin = _BrokenPoolAdmin(Pool, AdminSite(name="broken"))
    plain = rf.get("/")
    plain.user = admin_user
    searched = rf.get("/", {"q": "blue", "o": "1", "p": "1"})  # a search, an ordering and a page are no lookups
    searched.user = admin_user

    with pytest.raises(DataError):
        model_admin.changelist_view(plain)
    with pytest.raises(DataError):
        model_admin.changelist_view(searched)
