"""Deployment settings: production passes `check --deploy` with no warning, refuses to start without its keys, and
serves https only behind its proxy, while the embedded default and `make run` keep working on plain http; TLS to
Redis and PostgreSQL is a matter of settings alone."""
import stat

import pytest
from cryptography.fernet import Fernet

from tests.conftest import embedded_env, embedded_install, manage

from .conftest import production_env, python_json

pytestmark = pytest.mark.django_db

PRINT_SECURITY = """
import json
from django.conf import settings
print(json.dumps({name: getattr(settings, name) for name in (
    "DEBUG", "SECURE_SSL_REDIRECT", "SECURE_PROXY_SSL_HEADER", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD", "SECURE_CONTENT_TYPE_NOSNIFF",
    "X_FRAME_OPTIONS", "SECRET_KEY", "AGENTS_ENCRYPTION_KEYS", "AGENTS_MESSAGE_KEY")}))
"""


def test_production_settings_pass_the_deploy_check_with_no_warnings(tmp_path):
    # given the environment of a production host
    env = production_env(tmp_path)

    # when the deploy check runs, failing on any warning
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)

    # then it passes and says there is nothing to report
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


def test_the_embedded_default_is_not_passed_off_as_production(tmp_path):
    # given the embedded default (what `make run` uses, on plain http)
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=embedded_env(tmp_path))

    # then the deploy check names what production would need
    assert result.returncode != 0
    for warning in ("security.W008", "security.W012", "security.W016", "security.W004"):
        assert warning in result.stderr + result.stdout


def test_production_settings_come_from_the_environment(tmp_path):
    env = production_env(tmp_path, AGENTS_HSTS_PRELOAD="0")

    seen = python_json(PRINT_SECURITY, env)

    assert seen["DEBUG"] is False and seen["SECURE_SSL_REDIRECT"] is True
    assert seen["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert seen["SESSION_COOKIE_SECURE"] and seen["CSRF_COOKIE_SECURE"]
    assert seen["SECURE_HSTS_SECONDS"] >= 365 * 24 * 3600 and seen["SECURE_HSTS_INCLUDE_SUBDOMAINS"]
    assert seen["SECURE_HSTS_PRELOAD"] is False  # from the environment
    assert seen["SECURE_CONTENT_TYPE_NOSNIFF"] and seen["X_FRAME_OPTIONS"] == "DENY"
    assert seen["SECRET_KEY"] == env["SECRET_KEY"]
    assert seen["AGENTS_ENCRYPTION_KEYS"] == [env["AGENTS_ENCRYPTION_KEYS"]]
    assert seen["AGENTS_MESSAGE_KEY"] == [env["AGENTS_MESSAGE_KEY"]]
    assert not any(tmp_path.glob("*key*")), "production generated a key instead of using the environment's"


@pytest.mark.parametrize("name", ["SECRET_KEY", "AGENTS_ENCRYPTION_KEYS", "AGENTS_MESSAGE_KEY"])
def test_production_refuses_to_start_without_a_key_every_host_must_share(tmp_path, name):
    env = production_env(tmp_path)
    del env[name]

    result = manage("check", env=env)

    assert result.returncode != 0
    assert f"{name} must be set in the environment when AGENTS_HTTPS is on" in result.stderr
    assert not (tmp_path / name.lower()).exists()


def test_production_refuses_a_short_message_key(tmp_path):
    result = manage("check", env=production_env(tmp_path, AGENTS_MESSAGE_KEY="letmein"))

    assert result.returncode != 0
    assert "AGENTS_MESSAGE_KEY: every key must be at least 32 random characters" in result.stderr
    assert "letmein" not in result.stderr


@pytest.mark.parametrize("weak", ["changeme", "django-insecure-" + "x1y2z3" * 10, "ab" * 40])
def test_production_refuses_a_guessable_secret_key(tmp_path, weak):
    # given a production host whose SECRET_KEY anyone could guess (sessions and password resets are signed with it)
    result = manage("check", env=production_env(tmp_path, SECRET_KEY=weak))

    # then nothing starts, the reason is named and the key is not shown
    assert result.returncode != 0
    assert "SECRET_KEY must be at least 50 random characters when AGENTS_HTTPS is on" in result.stderr
    assert weak not in result.stderr


def test_the_embedded_default_generates_its_keys_once_readable_only_by_their_owner(tmp_path):
    first = python_json(PRINT_SECURITY, embedded_env(tmp_path))
    second = python_json(PRINT_SECURITY, embedded_env(tmp_path))

    assert first["SECURE_SSL_REDIRECT"] is False and first["SESSION_COOKIE_SECURE"] is False  # plain http works
    assert first["AGENTS_ENCRYPTION_KEYS"] == second["AGENTS_ENCRYPTION_KEYS"]
    assert first["AGENTS_MESSAGE_KEY"] == second["AGENTS_MESSAGE_KEY"]
    Fernet(first["AGENTS_ENCRYPTION_KEYS"][0])  # a usable Fernet key
    assert len(first["AGENTS_MESSAGE_KEY"][0]) >= 50 and len(first["SECRET_KEY"]) >= 50
    for name in ("secret_key", "encryption_key", "message_key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    other = python_json(PRINT_SECURITY, embedded_env(tmp_path / "other"))
    assert first["AGENTS_MESSAGE_KEY"] != other["AGENTS_MESSAGE_KEY"]


def test_the_embedded_database_holding_tokens_and_sessions_is_readable_only_by_its_owner(embedded_migrated):
    # given the SQLite database `make run` migrates (API tokens, session keys and password hashes in it)
    database = embedded_migrated

    # then no other local user may read it, nor its write-ahead log
    for path in [database, *database.parent.glob(f"{database.name}-*")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_an_embedded_database_left_readable_by_others_is_made_private_on_the_next_start(tmp_path, embedded_migrated):
    # given an install whose database an earlier version left readable by every local user
    env = embedded_install(tmp_path, embedded_migrated)
    (tmp_path / "agentsite.sqlite3").chmod(0o644)

    # when any command starts on it
    result = manage("check", env=env)

    # then it works on the database and the database is its owner's alone again
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((tmp_path / "agentsite.sqlite3").stat().st_mode) == 0o600


def test_behind_the_proxy_http_is_redirected_and_https_answers_with_strict_headers(client, settings):
    # given production's transport settings (as production_env makes them)
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = settings.SECURE_HSTS_PRELOAD = True

    # when a browser asks over plain http, then it is sent to https
    plain = client.get("/admin/login/")
    assert plain.status_code == 301 and plain["Location"] == "https://testserver/admin/login/"

    # when the proxy says the request came over https, then the page is served with strict headers
    secure = client.get("/admin/login/", headers={"X-Forwarded-Proto": "https"})
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert secure["X-Frame-Options"] == "DENY" and secure["X-Content-Type-Options"] == "nosniff"
    assert secure.cookies["csrftoken"]["secure"]

    # and the health probe still answers a container's plain-http check
    assert client.get("/healthz").status_code == 200


def test_without_https_the_site_works_on_plain_http_as_make_run_serves_it(client):
    page = client.get("/admin/login/")

    assert page.status_code == 200
    assert not page.cookies["csrftoken"]["secure"]
    assert "Strict-Transport-Security" not in page


def test_rediss_urls_turn_on_verified_tls_to_the_broker_and_result_backend(tmp_path):
    env = embedded_env(tmp_path, CELERY_BROKER_URL="rediss://cache.example:6380/0",
                       CELERY_RESULT_BACKEND="rediss://cache.example:6380/1",
                       AGENTS_REDIS_TLS_CA_FILE="/etc/ssl/certs/redis-ca.pem")

    seen = python_json("""
import json
from agentsite.celery import app
connection = app.connection_for_write()
backend = app.backend
print(json.dumps({
    "broker_ssl": {key: (int(value) if key == "ssl_cert_reqs" else value) for key, value in connection.ssl.items()},
    "backend_class": backend.connparams["connection_class"].__name__,
    "backend_cert_reqs": int(backend.connparams["ssl_cert_reqs"]),
    "backend_ca": backend.connparams["ssl_ca_certs"],
}))
""", env)

    assert seen["broker_ssl"]["ssl_cert_reqs"] == 2  # ssl.CERT_REQUIRED: the server's certificate is verified
    assert seen["broker_ssl"]["ssl_ca_certs"] == "/etc/ssl/certs/redis-ca.pem"
    assert seen["backend_class"] == "SSLConnection" and seen["backend_cert_reqs"] == 2
    assert seen["backend_ca"] == "/etc/ssl/certs/redis-ca.pem"


def test_a_bad_redis_tls_mode_is_refused_by_name(tmp_path):
    env = embedded_env(tmp_path, CELERY_BROKER_URL="rediss://cache.example:6380/0", AGENTS_REDIS_TLS_CERT_REQS="maybe")

    result = manage("check", env=env)

    assert result.returncode != 0
    assert "AGENTS_REDIS_TLS_CERT_REQS must be one of required, optional, none, not 'maybe'" in result.stderr


def test_postgresql_sslmode_in_database_url_reaches_the_driver(tmp_path):
    env = embedded_env(tmp_path, DATABASE_URL="postgres://agent:pw@db.example:5432/agentsite"
                                              "?sslmode=verify-full&sslrootcert=/etc/ssl/certs/db-ca.pem")

    seen = python_json("""
import json
from django.db import connection
params = connection.get_connection_params()
print(json.dumps({"sslmode": params.get("sslmode"), "sslrootcert": params.get("sslrootcert")}))
""", env)

    assert seen == {"sslmode": "verify-full", "sslrootcert": "/etc/ssl/certs/db-ca.pem"}
