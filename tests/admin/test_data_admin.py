"""The data admin: sources edited through validation, runs with their quality results, datasets with schema and
lineage."""
import pytest
from django.contrib.auth.models import Group, User
from django.urls import reverse

from agents.api.groups import VIEWERS
from agents.core.teams import team_default
from agents.data import services
from agents.data.samples import orders_frame
from agents.models import AuditEntry, DataRun, Dataset, DataSource
from tests.data.conftest import load, write_orders

pytestmark = pytest.mark.django_db


@pytest.fixture
def finished_runs(data_root):
    write_orders(data_root, orders_frame(800))
    good = services.pipeline_run(pipeline=load({
        "name": "admin-good", "source": {"kind": "file", "path": "orders.csv"}, "key": ["order_id"],
        "quality_checks": [{"type": "uniqueness", "columns": ["order_id"], "severity": "warn"},
                           {"type": "row_count", "min": 1}],
        "output": {"dataset": "admin_orders"},
    }).pipeline.name)
    bad = services.pipeline_run(pipeline=load({
        "name": "admin-bad", "source": {"kind": "file", "path": "orders.csv"},
        "quality_checks": [{"type": "validity", "column": "amount", "min": 0}],
    }).pipeline.name)
    return good, bad


def test_run_list_shows_status_and_quality_at_a_glance(admin_client, finished_runs):
    page = admin_client.get(reverse("admin:agents_datarun_changelist")).content.decode()
    assert "admin-good" in page and "admin-bad" in page
    assert page.count("wf-succeeded") >= 2 and page.count("wf-failed") >= 2  # status and quality badges


def test_run_page_shows_each_check_with_a_sample_of_failing_rows(admin_client, finished_runs):
    good, bad = finished_runs
    page = admin_client.get(reverse("admin:agents_datarun_change", args=[good.pk])).content.decode()
    duplicate = good.quality[0]["sample"][0]["order_id"]
    assert "uniqueness:order_id" in page or "uniqueness" in page
    assert f"&quot;order_id&quot;: {duplicate}" in page
    assert "admin_orders #1" in page
    failed = admin_client.get(reverse("admin:agents_datarun_change", args=[bad.pk])).content.decode()
    assert "quality check(s) failed" in failed


def test_dataset_page_shows_schema_and_lineage(admin_client, finished_runs):
    dataset = Dataset.objects.get(name="admin_orders")
    page = admin_client.get(reverse("admin:agents_dataset_change", args=[dataset.pk])).content.decode()
    for column in ("order_id", "customer_id", "ordered_at"):
        assert f"<td>{column}</td>" in page
    assert "orders.csv" in page and dataset.checksum in page


def test_a_source_with_a_refused_path_is_a_form_error_and_nothing_is_saved(admin_client, data_root):
    url = reverse("admin:agents_datasource_add")
    response = admin_client.post(url, {"name": "etc", "description": "",
                                       "spec": '{"kind": "file", "path": "../../etc/passwd"}'})
    assert response.status_code == 200
    assert "errorlist" in response.content.decode() and ".." in response.content.decode()
    assert not DataSource.objects.exists()
    response = admin_client.post(url, {"name": "orders", "description": "",
                                       "spec": '{"kind": "file", "path": "orders.csv"}'})
    assert response.status_code == 302
    assert DataSource.objects.get(name="orders").spec["kind"] == "file"


def test_a_stored_source_keeps_its_name_and_its_changes_are_audited(admin_client, data_root):
    # a rename broke every pipeline naming the source, and the form's saves were not audited
    admin_client.post(reverse("admin:agents_datasource_add"), {
        "name": "orders-src", "description": "", "spec": '{"kind": "file", "path": "orders.csv"}'})
    source = DataSource.objects.get(name="orders-src")
    created = source.updated_at

    response = admin_client.post(reverse("admin:agents_datasource_change", args=[source.pk]), {
        "name": "orders-renamed", "description": "moved", "spec": '{"kind": "file", "path": "orders.csv"}'})

    source.refresh_from_db()
    assert response.status_code == 302
    assert (source.name, source.description) == ("orders-src", "moved") and source.updated_at > created
    saves = AuditEntry.objects.filter(action="data_source.save").order_by("pk")
    assert list(saves.values_list("summary", flat=True)) == ["created data source orders-src",
                                                             "replaced data source orders-src"]


def test_pipeline_version_page_shows_the_definition(admin_client, finished_runs):
    version = finished_runs[0].version
    page = admin_client.get(reverse("admin:agents_pipelineversion_change", args=[version.pk])).content.decode()
    assert "admin-good" in page and "uniqueness" in page


def test_a_viewer_neither_sees_nor_can_post_the_run_action(client, data_root):
    version = load({"name": "viewed", "source": {"kind": "file", "path": "orders.csv"}})
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.groups.add(Group.objects.get(name=VIEWERS), team_default().group)
    client.force_login(viewer)

    listing = client.get(reverse("admin:agents_pipelineversion_changelist")).content.decode()
    posted = client.post(reverse("admin:agents_pipelineversion_changelist"),
                         {"action": "run_on_data_agent", "_selected_action": [str(version.pk)]}, follow=True)

    assert "viewed" in listing and 'value="run_on_data_agent"' not in listing
    assert not any("queued" in str(m) for m in posted.context["messages"])
    assert not DataRun.objects.exists()
