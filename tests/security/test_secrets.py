"""Stored secrets: set from the command line (never argv) or admin (never shown back), named by webhooks, api
sources and database connections as {"secret": NAME}, and re-encrypted under a new key by `secrets rotate`."""
import html
import json
import os
import re
import sqlite3
import subprocess
import sys
from io import StringIO
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.db import connection

from agents.core.crypto import decrypt, key_generate, secret_set, secret_value
from agents.data.sources import source_frame, source_validate
from agents.exceptions import DataSourceError, NotificationError, SecretError
from agents.models import AuditEntry, Secret
from agents.monitoring.notifiers import notification_send, notifier_validate
from tests.conftest import PROJECT_DIR

pytestmark = pytest.mark.django_db


def command_env(**extra: str) -> dict:
    """The environment of a management command run by an operator against the test database, with the same keys."""
    database = connection.settings_dict
    return {
        **os.environ,
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
        "AGENTS_ENCRYPTION_KEYS": ",".join(django_settings.AGENTS_ENCRYPTION_KEYS),
        **extra,
    }


def manage(*args: str, env: dict, input_text: str = "") -> subprocess.CompletedProcess:
    """Run ``manage.py`` as an operator would, with ``input_text`` piped on stdin."""
    return subprocess.run([sys.executable, str(PROJECT_DIR / "manage.py"), *args], env=env, cwd=PROJECT_DIR,
                          input=input_text, capture_output=True, text=True, timeout=120)


# --- references ---------------------------------------------------------------------------------------------


def test_a_webhook_header_naming_a_secret_is_sent_with_its_value(endpoint, encryption_key):
    secret_set(name="HOOK_TOKEN", value="Bearer t0ken")

    attempts = notification_send(
        handler="webhook",
        config={"url": f"{endpoint.url}/hook", "headers": {"Authorization": {"secret": "HOOK_TOKEN"}}},
        payload={"event": "firing", "check": "api"}, dedup_key="k-1",
    )

    assert attempts[-1]["ok"]
    assert endpoint.headers[0]["Authorization"] == "Bearer t0ken"
    assert "t0ken" not in json.dumps(attempts)


def test_a_webhook_naming_a_secret_not_stored_sends_nothing_and_says_which(endpoint, encryption_key):
    with pytest.raises(NotificationError) as raised:
        notification_send(handler="webhook", config={"url": f"{endpoint.url}/hook",
                                                     "headers": {"Authorization": {"secret": "NOT_STORED"}}},
                          payload={"event": "firing"}, dedup_key="k-1")

    assert "header 'Authorization' comes from secret 'NOT_STORED', which is not stored" in str(raised.value)
    assert endpoint.headers == []


def test_an_api_source_header_naming_a_secret_is_sent_with_its_value(endpoint, encryption_key):
    secret_set(name="api.key", value="k-123")

    frame = source_frame({"kind": "api", "url": f"{endpoint.url}/records",
                          "headers": {"X-Api-Key": {"secret": "api.key"}}})

    assert frame["id"].tolist() == [1, 2]
    assert endpoint.headers[0]["X-Api-Key"] == "k-123"


def test_a_database_connection_can_be_a_stored_secret(settings, tmp_path, encryption_key):
    # given a warehouse whose URL is stored as a secret, and named so in AGENTS_DATA_DATABASES
    path = tmp_path / "warehouse.sqlite3"
    with sqlite3.connect(path) as database:
        database.execute("CREATE TABLE orders (id INTEGER)")
        database.executemany("INSERT INTO orders VALUES (?)", [(1,), (2,), (3,)])
    secret_set(name="WAREHOUSE_URL", value=f"sqlite:///{path}")
    settings.AGENTS_DATA_DATABASES = {"warehouse": "secret:WAREHOUSE_URL", "missing": "secret:NOPE"}

    frame = source_frame({"kind": "database", "connection": "warehouse", "query": "SELECT id FROM orders ORDER BY id"})

    assert frame["id"].tolist() == [1, 2, 3]
    with pytest.raises(DataSourceError,
                       match="database connection 'missing' comes from secret 'NOPE', which is not stored"):
        source_frame({"kind": "database", "connection": "missing", "query": "SELECT 1"})


@pytest.mark.parametrize(("reference", "problem"), [
    ({"secret": "HOOK_TOKEN"}, None),
    ({"env": "HOOK_TOKEN"}, None),
    ({"secret": "has space"}, "secret 'has space' is not a secret name"),
    ({"secret": "A", "env": "B"}, "must be a string or {\"env\": \"VARIABLE_NAME\"} or {\"secret\": \"NAME\"}"),
    ({"vault": "A"}, "must be a string or {\"env\": \"VARIABLE_NAME\"} or {\"secret\": \"NAME\"}"),
])
def test_definitions_accept_a_secret_wherever_they_accept_an_environment_variable(reference, problem):
    webhook = notifier_validate("webhook", {"url": "http://127.0.0.1/hook", "headers": {"Authorization": reference}})
    _, source = source_validate({"kind": "api", "url": "http://127.0.0.1/x", "headers": {"X-Key": reference}},
                                where="orders")

    if problem is None:
        assert webhook == [] and source == []
    else:
        assert len(webhook) == 1 and webhook[0].startswith(f"parameter 'headers' 'Authorization': {problem}")
        assert len(source) == 1
        assert source[0].startswith("orders.headers.X-Key: must be text or {env: VARIABLE} or {secret: NAME}")


def test_a_secret_decrypted_only_by_a_removed_key_fails_by_name(settings, encryption_key):
    secret_set(name="OLD", value="v")
    settings.AGENTS_ENCRYPTION_KEYS = [key_generate()]

    with pytest.raises(SecretError, match="the value comes from secret 'OLD', which cannot be decrypted"):
        secret_value({"secret": "OLD"})


# --- command line -------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_secrets_set_reads_the_value_from_stdin_never_prints_it_and_is_audited_as_the_os_user():
    result = manage("secrets", "set", "HOOK_TOKEN", "--description", "ops webhook", env=command_env(),
                    input_text="Bearer t0ken\n")

    assert result.returncode == 0, result.stderr
    assert "t0ken" not in result.stdout + result.stderr
    stored = Secret.objects.get(name="HOOK_TOKEN")
    assert "t0ken" not in stored.ciphertext and decrypt(stored.ciphertext) == "Bearer t0ken"
    entry = AuditEntry.objects.get(action="secret.set")
    assert entry.actor.startswith("cli:") and entry.object_id == str(stored.pk)
    assert "t0ken" not in json.dumps(entry.detail) + entry.summary


@pytest.mark.django_db(transaction=True)
def test_secrets_set_refuses_a_value_on_the_command_line_without_echoing_it():
    result = manage("secrets", "set", "HOOK_TOKEN", "Bearer-t0ken", env=command_env())

    assert result.returncode != 0
    assert "never taken from the command line" in result.stderr
    assert "t0ken" not in result.stderr + result.stdout
    assert not Secret.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_secrets_set_takes_a_value_from_a_named_variable_and_list_never_shows_values():
    assert manage("secrets", "set", "DB_PASSWORD", "--value-env", "SOURCE_VAR",
                  env=command_env(SOURCE_VAR="pw-9")).returncode == 0

    listing = manage("secrets", "list", "--json", env=command_env())

    assert listing.returncode == 0, listing.stderr
    assert [item["name"] for item in json.loads(listing.stdout)] == ["DB_PASSWORD"]
    assert "pw-9" not in listing.stdout and Secret.objects.get().ciphertext not in listing.stdout
    assert secret_value({"secret": "DB_PASSWORD"}) == "pw-9"


def test_secrets_rotate_re_encrypts_everything_under_the_newest_key(settings, capsys):
    old, new = key_generate(), key_generate()
    settings.AGENTS_ENCRYPTION_KEYS = [old]
    secret_set(name="A", value="alpha")
    secret_set(name="B", value="beta")
    updated = dict(Secret.objects.values_list("name", "updated_at"))

    settings.AGENTS_ENCRYPTION_KEYS = [new, old]
    call_command("secrets", "rotate")
    assert "2 secrets re-encrypted under the newest key" in capsys.readouterr().out

    settings.AGENTS_ENCRYPTION_KEYS = [new]  # the old key is gone
    assert secret_value({"secret": "A"}) == "alpha" and secret_value({"secret": "B"}) == "beta"
    rows = {secret.name: secret for secret in Secret.objects.all()}
    assert all(rows[name].rotated_at and rows[name].updated_at == updated[name] for name in ("A", "B"))


def test_secrets_rotate_changes_nothing_when_one_secret_cannot_be_decrypted(settings):
    lost, current = key_generate(), key_generate()
    settings.AGENTS_ENCRYPTION_KEYS = [current]
    secret_set(name="KEPT", value="k")
    settings.AGENTS_ENCRYPTION_KEYS = [lost]
    secret_set(name="ORPHAN", value="o")
    before = dict(Secret.objects.values_list("name", "ciphertext"))

    settings.AGENTS_ENCRYPTION_KEYS = [key_generate(), current]
    with pytest.raises(CommandError, match="secret 'ORPHAN' cannot be rotated: .* nothing was changed"):
        call_command("secrets", "rotate")

    assert dict(Secret.objects.values_list("name", "ciphertext")) == before


# --- admin --------------------------------------------------------------------------------------------------


def test_admin_creates_and_replaces_a_secret_but_never_shows_it_back(admin_client, encryption_key):
    # when an operator adds a secret
    added = admin_client.post("/admin/agents/secret/add/",
                              {"name": "HOOK_TOKEN", "value": "Bearer t0ken", "description": "ops webhook"})
    assert added.status_code == 302, added.content.decode()[:2000]
    secret = Secret.objects.get(name="HOOK_TOKEN")
    assert decrypt(secret.ciphertext) == "Bearer t0ken"

    # then neither the list nor the change page shows the value or the ciphertext
    change_url = f"/admin/agents/secret/{secret.pk}/change/"
    for page in (admin_client.get("/admin/agents/secret/"), admin_client.get(change_url)):
        assert page.status_code == 200
        assert b"HOOK_TOKEN" in page.content
        assert b"t0ken" not in page.content and secret.ciphertext.encode() not in page.content

    # when the description changes and the value is left empty, the value is kept
    kept = admin_client.post(change_url, {"value": "", "description": "rotated monthly"})
    assert kept.status_code == 302
    assert secret_value({"secret": "HOOK_TOKEN"}) == "Bearer t0ken"
    assert Secret.objects.get().description == "rotated monthly"

    # when a new value is given, it replaces the old one
    admin_client.post(change_url, {"value": "Bearer n3w", "description": "x"})
    assert secret_value({"secret": "HOOK_TOKEN"}) == "Bearer n3w"
    assert list(AuditEntry.objects.order_by("pk").values_list("actor", "action")) == [("admin", "secret.set")] * 3


def test_admin_refuses_a_new_secret_without_a_value(admin_client, encryption_key):
    page = admin_client.post("/admin/agents/secret/add/", {"name": "EMPTY", "value": "", "description": ""})

    assert page.status_code == 200
    assert b"A new secret needs a value." in page.content
    assert not Secret.objects.exists()


def test_a_secret_bound_to_hosts_is_sent_to_them_and_refused_for_any_other(endpoint, encryption_key, settings):
    settings.AGENTS_MONITOR_ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    secret_set(name="HOOK_TOKEN", value="Bearer t0ken", hosts=["LOCALHOST"])
    config = {"headers": {"Authorization": {"secret": "HOOK_TOKEN"}}, "attempts": 1}
    port = urlsplit(endpoint.url).port

    sent = notification_send(handler="webhook", config={**config, "url": f"http://localhost:{port}/hook"},
                             payload={"event": "firing"}, dedup_key="k-1")
    with pytest.raises(NotificationError) as refused:
        notification_send(handler="webhook", config={**config, "url": f"http://127.0.0.1:{port}/hook"},
                          payload={"event": "firing"}, dedup_key="k-2")

    assert sent[-1]["ok"] and len(endpoint.headers) == 1
    assert "secret 'HOOK_TOKEN', which may be sent only to localhost, not to '127.0.0.1'" in str(refused.value)
    assert "t0ken" not in str(refused.value)


def test_secrets_set_binds_hosts_from_the_command_line(encryption_key, monkeypatch):
    monkeypatch.setenv("TOKEN_VALUE", "t0ken")

    call_command("secrets", "set", "API_TOKEN", "--value-env", "TOKEN_VALUE", "--host", "api.example.com",
                 "--host", "Backup.Example.com", stdout=StringIO())

    assert Secret.objects.get(name="API_TOKEN").hosts == ["api.example.com", "backup.example.com"]


def test_admin_binds_a_secret_to_hosts_and_refuses_a_bad_list(admin_client, encryption_key):
    bound = admin_client.post("/admin/agents/secret/add/", {"name": "BOUND", "value": "v", "description": "",
                                                            "hosts": '["api.example.com"]'})
    bad = admin_client.post("/admin/agents/secret/add/", {"name": "BAD", "value": "v", "description": "",
                                                          "hosts": '"api.example.com"'})

    assert bound.status_code == 302 and Secret.objects.get(name="BOUND").hosts == ["api.example.com"]
    assert bad.status_code == 200 and b"A list of host names" in bad.content
    assert not Secret.objects.filter(name="BAD").exists()


@pytest.mark.parametrize(("host", "reason"), [
    ("https://api.example.com/v1", "'https://api.example.com/v1' is a URL: give its host alone ('api.example.com')"),
    ("api.example.com:443", "'api.example.com:443' is not a host name"),
    ("api.example.com/v1", "'api.example.com/v1' is not a host name"),
    ("user@api.example.com", "'user@api.example.com' is not a host name"),
    ("api..example.com", "'api..example.com' is not a host name"),
    ("*.example.com", "'*.example.com' is not a host name: give a name such as api.example.com (no wildcard"),
    ("api.example.com.", "'api.example.com.' is not a host name"),
])
def test_a_host_a_url_would_never_name_is_refused_and_the_stored_binding_kept(encryption_key, monkeypatch,
                                                                                admin_client, host, reason):
    # given a secret bound to one host
    secret_set(name="API_TOKEN", value="t0ken", hosts=["api.example.com"])
    monkeypatch.setenv("TOKEN_VALUE", "n3w")

    # when a host that no URL's host name could equal is given, from the command line or the admin
    with pytest.raises(CommandError, match=re.escape(reason)):
        call_command("secrets", "set", "API_TOKEN", "--value-env", "TOKEN_VALUE", "--host", host, stdout=StringIO())
    page = admin_client.post("/admin/agents/secret/add/", {"name": "OTHER", "value": "v", "description": "",
                                                           "hosts": json.dumps([host])})

    # then it is refused by name, and nothing changes
    assert page.status_code == 200 and reason in html.unescape(page.content.decode())
    assert Secret.objects.get(name="API_TOKEN").hosts == ["api.example.com"]
    assert secret_value({"secret": "API_TOKEN"}) == "t0ken" and not Secret.objects.filter(name="OTHER").exists()


def test_ip_addresses_are_hosts_a_secret_may_be_bound_to_and_an_ipv6_one_matches_however_written(encryption_key):
    secret_set(name="LOCAL_TOKEN", value="t0ken", hosts=["127.0.0.1", "0:0:0:0:0:0:0:1"])

    assert Secret.objects.get(name="LOCAL_TOKEN").hosts == ["127.0.0.1", "::1"]
    assert secret_value({"secret": "LOCAL_TOKEN"}, host="0::1") == "t0ken"
    with pytest.raises(SecretError, match="may be sent only to 127.0.0.1, ::1, not to '::2'"):
        secret_value({"secret": "LOCAL_TOKEN"}, host="::2")


@pytest.mark.parametrize("hosts", ['["api.example.com\\u0000"]', '["\\ud800"]'])
def test_the_admin_refuses_hosts_it_cannot_store_as_a_form_error(admin_client, encryption_key, hosts):
    # it was a server error (PostgreSQL cannot store a NUL or a lone surrogate)
    response = admin_client.post("/admin/agents/secret/add/", {
        "name": "s1", "value": "v-1234", "description": "", "hosts": hosts})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["hosts"][0].startswith("Cannot be stored:")
    assert not Secret.objects.exists()
