"""Django settings for agentsite, read from the environment (12-factor).

With no environment set, everything runs embedded: SQLite under ``var/`` and a
filesystem Celery broker under ``var/broker`` that needs no server process but
works across processes. Production names PostgreSQL and Redis by URL; the code
paths are the same.
"""
import base64
import contextlib
import math
import os
import secrets
import ssl
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent


class _Env(environ.Env):
    """django-environ's reader: a value that is not of its setting's type stops the start naming the variable (its
    bare ValueError named neither the variable nor the value)."""

    def get_value(self, var, cast=None, default=environ.Env.NOTSET, parse_default=False):
        try:
            return super().get_value(var, cast=cast, default=default, parse_default=parse_default)
        except ValueError:
            kind = {int: "whole number", float: "number"}.get(cast, "value of its kind")
            raise ImproperlyConfigured(f"{var}: {str(self.ENVIRON.get(self.prefix + var, ''))[:100]!r} is not a "
                                       f"{kind}") from None


env = _Env()

#: Everything the embedded default writes (database, broker, generated secrets).
VAR_DIR = Path(env.str("AGENTS_VAR_DIR", default=str(BASE_DIR / "var"))).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _secret_from_file(name: str, generate=lambda: secrets.token_urlsafe(50)) -> str:
    """Read a generated secret from ``VAR_DIR``, creating it once (mode 0600).

    The file appears whole or not at all (written aside, then hard-linked into place), and the first process to
    link it wins: web, worker and beat starting together all read the same secret.
    """
    path = VAR_DIR / name
    if not path.exists():
        aside = VAR_DIR / f".{name}.{os.getpid()}.tmp"
        with os.fdopen(os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
            file.write(generate())
        try:
            os.link(aside, path)
        except FileExistsError:
            pass  # another process generated it first: use theirs
        finally:
            aside.unlink()
    return path.read_text().strip()


DEBUG = env.bool("DEBUG", default=False)
#: Production behind a TLS-terminating proxy: http is redirected to https, cookies are sent over https only,
#: HSTS is on, and the secrets below must come from the environment (every host of a deployment shares them).
#: Off by default so the embedded default and `make run` work on http://127.0.0.1; docker-compose turns it on.
AGENTS_HTTPS = env.bool("AGENTS_HTTPS", default=False)


def _production_secret(name: str, file_name: str, generate=lambda: secrets.token_urlsafe(50)) -> str:
    """``name`` from the environment; else, outside production, generated once per install under ``VAR_DIR``."""
    value = env.str(name, default="")
    if value:
        return value
    if AGENTS_HTTPS:
        raise ImproperlyConfigured(
            f"{name} must be set in the environment when AGENTS_HTTPS is on: every host of a deployment must "
            f"share it, so it cannot be generated per host (see docs/security.md, Production settings)"
        )
    return _secret_from_file(file_name, generate)


# A secret is never in the code: from the environment, or generated once per install.
SECRET_KEY = _production_secret("SECRET_KEY", "secret_key")
if AGENTS_HTTPS and (len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith("django-insecure-")):
    # Django's deploy check only warns about such a key (security.W009), and nothing runs that check at start.
    raise ImproperlyConfigured(
        "SECRET_KEY must be at least 50 random characters when AGENTS_HTTPS is on "
        "(python -c 'import secrets; print(secrets.token_urlsafe(64))')"
    )

#: Earlier SECRET_KEYs, comma-separated, still accepted for sessions and signed values while they rotate out.
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# --- Transport security (docs/security.md) -------------------------------------
#: The header a TLS-terminating proxy sets to say the client used https, e.g. ``HTTP_X_FORWARDED_PROTO`` (its
#: value must then be ``https``). Set it only behind a proxy that always sets or strips that header itself.
_proxy_ssl_header = env.str("AGENTS_PROXY_SSL_HEADER", default="")
SECURE_PROXY_SSL_HEADER = (_proxy_ssl_header, "https") if _proxy_ssl_header else None
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=AGENTS_HTTPS and not DEBUG)
#: The health probe answers over plain http too: container health checks call it on localhost.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = AGENTS_HTTPS
CSRF_COOKIE_SECURE = AGENTS_HTTPS
#: Seconds browsers remember to use https only (one year when AGENTS_HTTPS is on). Include subdomains and preload
#: only if every subdomain serves https: the preload flag lets anyone submit the domain to browsers' lists.
SECURE_HSTS_SECONDS = env.int("AGENTS_HSTS_SECONDS", default=365 * 24 * 3600 if AGENTS_HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("AGENTS_HSTS_INCLUDE_SUBDOMAINS", default=AGENTS_HTTPS)
SECURE_HSTS_PRELOAD = env.bool("AGENTS_HSTS_PRELOAD", default=AGENTS_HTTPS)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Keys (docs/security.md) ---------------------------------------------------
def _fernet_key() -> str:
    """A new Fernet key, as ``Fernet.generate_key()`` makes it (32 random bytes, URL-safe base64), without loading
    ``cryptography`` in every process that reads the settings."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


#: Fernet keys that encrypt stored secrets, comma-separated, newest first: the first encrypts, every one decrypts
#: (keep an old key listed until `manage.py secrets rotate` has re-encrypted everything under the new one).
AGENTS_ENCRYPTION_KEYS = env.list("AGENTS_ENCRYPTION_KEYS", default=[]) or [
    _production_secret("AGENTS_ENCRYPTION_KEYS", "encryption_key", _fernet_key)
]
#: HMAC-SHA256 keys that sign agent messages, comma-separated, newest first: the first signs, every one verifies.
AGENTS_MESSAGE_KEY = env.list("AGENTS_MESSAGE_KEY", default=[]) or [
    _production_secret("AGENTS_MESSAGE_KEY", "message_key")
]
if AGENTS_HTTPS and any(len(key.strip()) < 32 for key in AGENTS_MESSAGE_KEY):
    raise ImproperlyConfigured(
        "AGENTS_MESSAGE_KEY: every key must be at least 32 random characters "
        "(python -c 'import secrets; print(secrets.token_urlsafe(48))')"
    )

INSTALLED_APPS = [
    "agentsite.apps.AdminConfig",  # django.contrib.admin, its model admins loaded with the URL routes
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "django_celery_results",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "agents",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "agents.core.tracing.TraceMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "agents.api.middleware.ApiSlashMiddleware",  # before CommonMiddleware's APPEND_SLASH redirect
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "agents.core.audit.AuditActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "agentsite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "agentsite.wsgi.application"


def _owner_only(path: Path, *, create: bool) -> None:
    """Make ``path`` readable and writable by its owner only: created so when ``create`` and absent, else (if it
    exists and is ours) with group and other access taken away."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    if info.st_uid == os.getuid() and info.st_mode & 0o077:
        os.chmod(path, 0o600)


_EMBEDDED_DATABASE = VAR_DIR / "agentsite.sqlite3"
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{_EMBEDDED_DATABASE}"),
}
if DATABASES["default"]["NAME"] == str(_EMBEDDED_DATABASE):
    # It holds API tokens and session keys in the clear: another local user reading it would sign in as anyone.
    # SQLite gives its write-ahead log and shared-memory files the database's own mode.
    for _suffix in ("", "-wal", "-shm"):
        _owner_only(Path(f"{_EMBEDDED_DATABASE}{_suffix}"), create=not _suffix)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share one file: wait for locks instead of failing,
    # take the write lock up front, and let readers run beside a writer.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
#: The statements every workflow step sends are prepared on the server once per connection (agents.core.prepared);
#: false for a connection pooler in transaction mode that does not keep prepared statements (PgBouncer < 1.21).
AGENTS_DB_PREPARED_STATEMENTS = env.bool("AGENTS_DB_PREPARED_STATEMENTS", default=True)
#: A command's ``--wait`` LISTENs for its run's status changes (agents.management.base.wait_for_status); false behind
#: a pooler in transaction mode, where LISTEN and UNLISTEN may land on different server connections.
AGENTS_DB_LISTEN = env.bool("AGENTS_DB_LISTEN", default=True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

#: ``text`` (default): readable lines with ``[trace_id]``; ``json``: one JSON object per line, for a log shipper.
LOG_FORMAT = env.str("LOG_FORMAT", default="text").lower()
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'text' or 'json', not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"trace_id": {"()": "agents.core.tracing.TraceIdFilter"},
                "secrets": {"()": "agents.core.redaction.SecretRedactFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(trace_id)s] %(message)s"},
        "json": {"()": "agents.core.tracing.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["trace_id", "secrets"], "formatter": LOG_FORMAT},
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

# --- Celery -----------------------------------------------------------------

#: The queues of the agent types; a worker consuming one of them hosts an agent of that type.
AGENT_QUEUES = ("workflow", "decision", "data", "monitoring")

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://localhost//")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="django-db")

#: Seconds a delivered but unacknowledged message stays invisible before the
#: broker hands it out again; above the longest countdown and time limit.
AGENTS_VISIBILITY_TIMEOUT_S = env.int("AGENTS_VISIBILITY_TIMEOUT_S", default=3600)
#: Seconds a send waits for a broker that cannot be reached (restarting) before it gives up and the work it carried
#: is reported as not sent.
AGENTS_BROKER_RETRY_S = env.float("AGENTS_BROKER_RETRY_S", default=20.0)

if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    _broker_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for _sub in ("queue", "control", "processed"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True, mode=0o700)  # messages hold tasks' arguments
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
        "processed_folder": str(_broker_dir / "processed"),
        "polling_interval": 0.05,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": AGENTS_VISIBILITY_TIMEOUT_S,
        # Redis priorities: 0 is highest; ten steps so agent tasks can use 0-9.
        "queue_order_strategy": "priority",
        "priority_steps": list(range(10)),
        "sep": ":",
        # A producer finding the broker down (restarting) retries the connection for up to AGENTS_BROKER_RETRY_S
        # (20 s), every 0.5-2 s, instead of giving up after 4 s: a step that finishes meanwhile still sends what
        # comes next.
        "connect_retries_timeout": AGENTS_BROKER_RETRY_S,
        "interval_start": 0,
        "interval_step": 0.5,
        "interval_max": 2,
    }
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": AGENTS_VISIBILITY_TIMEOUT_S}

#: TLS to Redis (a ``rediss://`` URL): the server certificate is verified against the system's CA bundle, or
#: AGENTS_REDIS_TLS_CA_FILE; AGENTS_REDIS_TLS_CERT_FILE/_KEY_FILE add a client certificate. ``required`` (default),
#: ``optional`` or ``none`` (no verification: only for a test server).
_REDIS_CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
_redis_cert_reqs = env.str("AGENTS_REDIS_TLS_CERT_REQS", default="required").lower()
if _redis_cert_reqs not in _REDIS_CERT_REQS:
    raise ImproperlyConfigured(
        f"AGENTS_REDIS_TLS_CERT_REQS must be one of {', '.join(_REDIS_CERT_REQS)}, not {_redis_cert_reqs!r}"
    )
_REDIS_TLS = {
    "ssl_cert_reqs": _REDIS_CERT_REQS[_redis_cert_reqs],
    "ssl_ca_certs": env.str("AGENTS_REDIS_TLS_CA_FILE", default="") or None,
    "ssl_certfile": env.str("AGENTS_REDIS_TLS_CERT_FILE", default="") or None,
    "ssl_keyfile": env.str("AGENTS_REDIS_TLS_KEY_FILE", default="") or None,
}
if CELERY_BROKER_URL.startswith("rediss://"):
    CELERY_BROKER_USE_SSL = _REDIS_TLS
if CELERY_RESULT_BACKEND.startswith("rediss://"):
    CELERY_REDIS_BACKEND_USE_SSL = _REDIS_TLS

# JSON only: a pickle message is refused by every worker.
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_EVENT_SERIALIZER = "json"

CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env.int("AGENTS_TASK_SOFT_TIME_LIMIT_S", default=300)
CELERY_TASK_TIME_LIMIT = env.int("AGENTS_TASK_TIME_LIMIT_S", default=330)
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_RESULT_EXTENDED = True
CELERY_RESULT_EXPIRES = env.int("AGENTS_RESULT_EXPIRES_S", default=7 * 24 * 3600)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
#: A message sent while the broker restarts waits for it (0, 0.5, 1, 1.5, then every 2 s: AGENTS_BROKER_RETRY_S in
#: all) instead of failing after Celery's default 0.6 s: a step that finishes then still starts what comes next.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": max(1, min(12, math.ceil((AGENTS_BROKER_RETRY_S - 3) / 2) + 4)),
                                    "interval_start": 0, "interval_step": 0.5, "interval_max": 2}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = TIME_ZONE

CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES = [Queue(name, routing_key=name) for name in ("default", *AGENT_QUEUES)]
#: Every worker also consumes its own direct queue (``<hostname>.dq2``): messages to one agent go there.
CELERY_WORKER_DIRECT = True
#: Routing by task module: ``workers.<queue>.*`` runs on ``<queue>``; the rest on ``default``.
CELERY_TASK_ROUTES = {f"workers.{queue}.*": {"queue": queue} for queue in AGENT_QUEUES}

CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
#: Imported by every Celery process: ``workers.beat`` starts the monitoring watchdog inside beat (``beat_init``).
CELERY_IMPORTS = ("workers.beat",)
#: Celery's Django fixup closes the database connection around every task unless this is set; a new
#: PostgreSQL connection per workflow step costs ~5 ms. Connections are instead closed when CONN_MAX_AGE
#: or a failed health check says so (``close_old_connections`` around each task, in agentsite/celery.py).
CELERY_DB_REUSE_MAX = env.int("AGENTS_DB_REUSE_MAX", default=1000)

# --- E-mail (alert notifications) ---------------------------------------------
#: SMTP from the environment; with no EMAIL_HOST set, mail is written to the console (nothing leaves the host).
EMAIL_HOST = env.str("EMAIL_HOST", default="")
EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND",
    default="django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
#: Seconds an SMTP server may take to answer, so a silent one cannot hold a worker.
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", default=10.0)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="agentsite@localhost")

# --- Agents -----------------------------------------------------------------

#: Python modules imported at start in every process: where operators register their own ``@action``,
#: ``@transform`` and ``@check_function`` functions (comma-separated dotted names).
AGENTS_EXTENSION_MODULES = env.list("AGENTS_EXTENSION_MODULES", default=[])

#: Seconds between a worker's heartbeats for its agents.
AGENTS_HEARTBEAT_INTERVAL_S = env.float("AGENTS_HEARTBEAT_INTERVAL_S", default=5.0)
#: Seconds between a worker's checks of its busy/idle state; it writes only on change.
AGENTS_STATUS_INTERVAL_S = env.float("AGENTS_STATUS_INTERVAL_S", default=1.0)
#: An agent not heard from for this many seconds is marked offline.
AGENTS_OFFLINE_AFTER_S = env.float("AGENTS_OFFLINE_AFTER_S", default=20.0)


def _beat_seconds(name: str, default: float) -> int:
    """The setting ``name``: how often a beat entry runs, in whole seconds, 1 at least. django-celery-beat's database
    scheduler keeps an interval and a message's expiry in whole seconds (``IntervalSchedule.every``,
    ``expire_seconds``): 0.5 s became 0, an entry always due, which beat sent dozens of times a second, starving every
    other entry (a workflow's schedule too). A fraction is rounded up, here, so the code reading the setting and beat
    agree."""
    return max(1, math.ceil(env.float(name, default=default)))


#: Seconds between sweeps that mark silent agents offline (a celery-beat entry).
AGENTS_OFFLINE_SWEEP_S = _beat_seconds("AGENTS_OFFLINE_SWEEP_S", 5.0)

CELERY_BEAT_SCHEDULE = {
    "agents-mark-offline": {
        "task": "workers.registry.agents_mark_offline",
        "schedule": AGENTS_OFFLINE_SWEEP_S,
        "options": {"expire_seconds": AGENTS_OFFLINE_SWEEP_S},
    },
}

#: Basic auth for Flower, ``user:password``; ``make run`` derives one from the admin user when unset.
FLOWER_BASIC_AUTH = env.str("FLOWER_BASIC_AUTH", default="")
#: Shortest Flower password production accepts: Flower answers over plain http and never slows down guessing.
FLOWER_PASSWORD_MIN_LENGTH = 16
_flower_user, _, _flower_password = FLOWER_BASIC_AUTH.partition(":")
if FLOWER_BASIC_AUTH and not (_flower_user.strip() and _flower_password.strip()):
    # Flower would let in anyone sending that user and an empty password (or no user at all).
    raise ImproperlyConfigured("FLOWER_BASIC_AUTH must be 'user:password' with neither part empty")
if FLOWER_BASIC_AUTH and AGENTS_HTTPS and len(_flower_password) < FLOWER_PASSWORD_MIN_LENGTH:
    raise ImproperlyConfigured(
        f"FLOWER_BASIC_AUTH: the password must be at least {FLOWER_PASSWORD_MIN_LENGTH} random characters when "
        "AGENTS_HTTPS is on (python -c 'import secrets; print(secrets.token_urlsafe(24))')"
    )

#: Hosts the ``http.request`` workflow action may call; ``*`` allows any.
AGENTS_HTTP_ALLOWED_HOSTS = env.list("AGENTS_HTTP_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
#: Largest body (bytes, once decompressed) an answer to an outbound request may have: ``http.request``, ``api``
#: sources, ``http`` checks, notifiers. A host (any public one, with ``*``) could otherwise fill a worker's memory.
AGENTS_OUTBOUND_MAX_BODY_BYTES = env.int("AGENTS_OUTBOUND_MAX_BODY_BYTES", default=100_000_000)
if AGENTS_OUTBOUND_MAX_BODY_BYTES <= 0:
    raise ImproperlyConfigured("AGENTS_OUTBOUND_MAX_BODY_BYTES must be a number of bytes above 0, not "
                               f"{AGENTS_OUTBOUND_MAX_BODY_BYTES}")

#: Where operators reach Flower; admin links each step to its task there.
AGENTS_FLOWER_URL = env.str("AGENTS_FLOWER_URL", default="http://127.0.0.1:5555")
#: Seconds without progress after which the reconciler re-sends a ready step or fails a lost one.
AGENTS_WORKFLOW_STALL_S = env.float("AGENTS_WORKFLOW_STALL_S", default=120.0)
#: Seconds a step past its soft time limit (``timeout_s``) has to clean up before its hard limit kills the process.
AGENTS_WORKFLOW_HARD_LIMIT_GRACE_S = env.float("AGENTS_WORKFLOW_HARD_LIMIT_GRACE_S", default=5.0)
#: Times the worker process running one piece of work (a step attempt, an agent task attempt, a message's handler,
#: a data run) may die (killed, out of memory, a crash in native code) before it fails instead of running again
#: forever: the worker hands its message out again each time (``task_reject_on_worker_lost``).
AGENTS_PROCESS_DEATHS = env.int("AGENTS_PROCESS_DEATHS", default=3)
if AGENTS_PROCESS_DEATHS < 1:
    raise ImproperlyConfigured(f"AGENTS_PROCESS_DEATHS must be 1 or more, not {AGENTS_PROCESS_DEATHS}")
#: Deepest nesting of sub-workflows (``workflow.run``): a run started this many levels below its root is refused.
AGENTS_WORKFLOW_MAX_DEPTH = env.int("AGENTS_WORKFLOW_MAX_DEPTH", default=10)
#: Seconds between reconciler sweeps (a celery-beat entry).
AGENTS_WORKFLOW_RECONCILE_S = _beat_seconds("AGENTS_WORKFLOW_RECONCILE_S", 60.0)
CELERY_BEAT_SCHEDULE["workflow-runs-reconcile"] = {
    "task": "workers.workflow.workflow_runs_reconcile",
    "schedule": AGENTS_WORKFLOW_RECONCILE_S,
    "options": {"expire_seconds": AGENTS_WORKFLOW_RECONCILE_S},
}
#: Seconds between sweeps of workflow timers: waiting steps past their timeout, runs and steps past a deadline.
AGENTS_WORKFLOW_TIMERS_S = _beat_seconds("AGENTS_WORKFLOW_TIMERS_S", 5.0)
CELERY_BEAT_SCHEDULE["workflow-timers"] = {
    "task": "workers.workflow.workflow_timers_sweep",
    "schedule": AGENTS_WORKFLOW_TIMERS_S,
    "options": {"expire_seconds": AGENTS_WORKFLOW_TIMERS_S},
}

# --- Decisions ----------------------------------------------------------------

#: Redis for the decision cache and API throttling (JSON values, never pickle), e.g. ``redis://host:6379/1``.
CACHE_URL = env.str("CACHE_URL", default="")
#: The decision cache: Redis at CACHE_URL; files under var/cache when unset, so every process on the machine
#: shares it.
AGENTS_DECISION_CACHE_URL = CACHE_URL
#: Seconds a cached decision stays valid; 0 turns the cache off.
AGENTS_DECISION_CACHE_TTL_S = env.int("AGENTS_DECISION_CACHE_TTL_S", default=300)
#: Context keys (or dotted paths) replaced by "***" in the audit, in every rule set.
AGENTS_DECISION_MASKED_KEYS = env.list(
    "AGENTS_DECISION_MASKED_KEYS", default=["password", "secret", "token", "ssn", "card_number", "iban"]
)
#: Audit rows written per batch by the bulk decision path.
AGENTS_DECISION_AUDIT_BATCH = env.int("AGENTS_DECISION_AUDIT_BATCH", default=500)
#: Where trained decision models (.skops files) are kept.
AGENTS_MODEL_DIR = Path(env.str("AGENTS_MODEL_DIR", default=str(VAR_DIR / "models")))

# --- Data -----------------------------------------------------------------------

#: Every file a pipeline reads or writes lives under this directory; absolute paths, '..' and links that
#: lead out of it are refused.
AGENTS_DATA_ROOT = Path(env.str("AGENTS_DATA_ROOT", default=str(VAR_DIR / "data")))
#: Database connections a ``database`` source may name: ``name=url`` pairs separated by ';', e.g.
#: ``warehouse=postgres://reader@db:5432/warehouse``. Sources are opened read-only.
AGENTS_DATA_DATABASES = {
    name.strip(): url.strip()
    for name, _, url in (
        pair.partition("=") for pair in env.str("AGENTS_DATA_DATABASES", default="").split(";") if pair.strip()
    )
}
#: Seconds a ``database`` source's query may run before the database cancels it.
AGENTS_DATA_STATEMENT_TIMEOUT_S = env.float("AGENTS_DATA_STATEMENT_TIMEOUT_S", default=60.0)
#: Functions a ``database`` source's query may not call: PostgreSQL's that read or list the server's files, write
#: large objects to them, reach other servers or sleep. The connection's role should be least-privileged all the same.
AGENTS_DATA_REFUSED_FUNCTIONS = env.list("AGENTS_DATA_REFUSED_FUNCTIONS", default=[
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_ls_logdir", "pg_ls_waldir",
    "pg_ls_tmpdir", "pg_ls_archive_statusdir", "lo_import", "lo_export", "pg_sleep", "pg_sleep_for",
    "pg_sleep_until", "dblink", "dblink_exec", "pg_terminate_backend", "pg_cancel_backend",
    # run SQL given as text, which the check cannot read (query_to_xml('select pg_read_file(...)', ...)), or undo
    # the statement timeout (set_config)
    "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema", "cursor_to_xml", "cursor_to_xmlschema",
    "ts_stat", "set_config", "pg_reload_conf", "pg_advisory_lock", "pg_advisory_xact_lock", "lo_get",
])
#: Hosts an ``api`` source may call; ``*`` allows any. Defaults to the workflow HTTP allow-list.
AGENTS_DATA_API_ALLOWED_HOSTS = env.list("AGENTS_DATA_API_ALLOWED_HOSTS", default=AGENTS_HTTP_ALLOWED_HOSTS)
#: Rows per chunk when a pipeline streams a source.
AGENTS_DATA_CHUNK_ROWS = env.int("AGENTS_DATA_CHUNK_ROWS", default=250_000)

# --- Monitoring -------------------------------------------------------------------

#: Hosts ``http`` and ``tcp`` checks and ``webhook`` notifications may reach; ``*`` allows any.
AGENTS_MONITOR_ALLOWED_HOSTS = env.list("AGENTS_MONITOR_ALLOWED_HOSTS", default=AGENTS_HTTP_ALLOWED_HOSTS)
#: Seconds between dispatcher runs (a celery-beat entry); checks due within the next tick are sent with an ETA.
AGENTS_MONITOR_DISPATCH_S = _beat_seconds("AGENTS_MONITOR_DISPATCH_S", 1.0)
#: Most checks one dispatcher run sends.
AGENTS_MONITOR_DISPATCH_LIMIT = env.int("AGENTS_MONITOR_DISPATCH_LIMIT", default=5000)
#: Checks due within this many seconds of each other go in one message, up to AGENTS_MONITOR_BATCH_SIZE.
AGENTS_MONITOR_BATCH_WINDOW_S = env.float("AGENTS_MONITOR_BATCH_WINDOW_S", default=0.2)
AGENTS_MONITOR_BATCH_SIZE = env.int("AGENTS_MONITOR_BATCH_SIZE", default=25)
#: Threads a worker process probes one batch with (probes wait on the network, not the CPU).
AGENTS_MONITOR_PROBE_THREADS = env.int("AGENTS_MONITOR_PROBE_THREADS", default=16)
#: Broker priority of check runs (Redis: 0 is highest), below the dispatcher's and the sweeps' 0.
AGENTS_MONITOR_CHECK_PRIORITY = env.int("AGENTS_MONITOR_CHECK_PRIORITY", default=3)
#: Seconds between alert sweeps (acknowledgement expiry, reminders, escalation).
AGENTS_MONITOR_SWEEP_S = _beat_seconds("AGENTS_MONITOR_SWEEP_S", 10.0)
#: Raw metric samples older than this are downsampled to hourly rows; rows older than the second are deleted.
AGENTS_MONITOR_RAW_RETENTION_S = env.float("AGENTS_MONITOR_RAW_RETENTION_S", default=2 * 24 * 3600)
AGENTS_MONITOR_RETENTION_S = env.float("AGENTS_MONITOR_RETENTION_S", default=30 * 24 * 3600)
#: Seconds between retention runs.
AGENTS_MONITOR_RETENTION_SWEEP_S = _beat_seconds("AGENTS_MONITOR_RETENTION_SWEEP_S", 3600.0)
#: The site's base URL as people reach it: Alertmanager notices link to an alert's admin page below it.
AGENTS_EXTERNAL_URL = env.str("AGENTS_EXTERNAL_URL", default="http://localhost:8000")
#: Who may scrape /metrics; with none of the three set, every scrape is refused (403 naming them).
#: A bearer token (``Authorization: Bearer <token>``) ...
AGENTS_METRICS_TOKEN = env.str("AGENTS_METRICS_TOKEN", default="")
#: ... scrape addresses or networks (``10.0.0.5``, ``10.1.0.0/16``) let in without credentials ...
AGENTS_METRICS_ALLOW_IPS = env.list("AGENTS_METRICS_ALLOW_IPS", default=[])
#: ... and/or HTTP basic auth by a user holding ``agents.view_metric`` (the viewers group does).
AGENTS_METRICS_BASIC_AUTH = env.bool("AGENTS_METRICS_BASIC_AUTH", default=False)
#: Seconds back the duration histograms of /metrics count finished runs and steps over.
AGENTS_METRICS_WINDOW_S = env.float("AGENTS_METRICS_WINDOW_S", default=3600.0)
#: Directories a ``plugin`` check's command must be in (after following links); Debian's monitoring-plugins by default.
AGENTS_MONITOR_PLUGIN_DIRS = env.list("AGENTS_MONITOR_PLUGIN_DIRS", default=["/usr/lib/nagios/plugins"])
#: The plugins (file names) a ``plugin`` check may run: by default a few that measure this host only. One listed here
#: runs with whatever arguments a check gives it: a network plugin (check_tcp, check_http) reaches any host they name,
#: AGENTS_MONITOR_ALLOWED_HOSTS does not apply. negate, urlize and check_by_ssh run other programs: never run.
AGENTS_MONITOR_PLUGINS = env.list("AGENTS_MONITOR_PLUGINS", default=[
    "check_disk", "check_load", "check_swap", "check_users", "check_dummy"])
#: The watchdog in beat raises its alert when no check result has been recorded for this many intervals of the
#: most frequent enabled check, or when no monitoring agent is online.
AGENTS_MONITOR_STALE_INTERVALS = env.float("AGENTS_MONITOR_STALE_INTERVALS", default=3.0)
#: Seconds an alert posted to /api/v2/alerts without endsAt fires unless posted again (Alertmanager's resolve_timeout).
AGENTS_MONITOR_RESOLVE_TIMEOUT_S = env.float("AGENTS_MONITOR_RESOLVE_TIMEOUT_S", default=300.0)
if not 0 < AGENTS_MONITOR_RESOLVE_TIMEOUT_S < math.inf:
    raise ImproperlyConfigured("AGENTS_MONITOR_RESOLVE_TIMEOUT_S must be a number of seconds above 0 (an alert posted "
                               f"without endsAt would resolve at once), not {AGENTS_MONITOR_RESOLVE_TIMEOUT_S}")
#: Seconds between the watchdog's looks (and the checks of routes' ``watchdog`` heartbeats), in the beat process.
AGENTS_MONITOR_WATCHDOG_S = env.float("AGENTS_MONITOR_WATCHDOG_S", default=5.0)
CELERY_BEAT_SCHEDULE.update({
    "monitoring-dispatch": {
        "task": "workers.monitoring.checks_dispatch",
        "schedule": AGENTS_MONITOR_DISPATCH_S,
        "options": {"expire_seconds": AGENTS_MONITOR_DISPATCH_S * 2, "priority": 0},
    },
    "monitoring-alerts-sweep": {
        "task": "workers.monitoring.alerts_sweep",
        "schedule": AGENTS_MONITOR_SWEEP_S,
        "options": {"expire_seconds": AGENTS_MONITOR_SWEEP_S, "priority": 0},
    },
    "monitoring-metrics-retain": {
        "task": "workers.monitoring.metrics_retain",
        "schedule": AGENTS_MONITOR_RETENTION_SWEEP_S,
        "options": {"expire_seconds": AGENTS_MONITOR_RETENTION_SWEEP_S},
    },
})

# --- Circuit breakers ------------------------------------------------------------

#: Where circuit breaker state lives, shared by every worker: a Redis URL (default: CACHE_URL when it names Redis);
#: empty for a file under var/breakers, shared by the processes of one machine.
AGENTS_BREAKER_URL = env.str(
    "AGENTS_BREAKER_URL",
    default=AGENTS_DECISION_CACHE_URL if AGENTS_DECISION_CACHE_URL.startswith(("redis://", "rediss://")) else "",
)
#: Consecutive failures (connection errors, timeouts, 5xx answers) of one dependency that open its circuit.
AGENTS_BREAKER_FAILURES = env.int("AGENTS_BREAKER_FAILURES", default=5)
#: Seconds an open circuit fails calls fast before it lets one trial call through.
AGENTS_BREAKER_COOLDOWN_S = env.float("AGENTS_BREAKER_COOLDOWN_S", default=30.0)

# --- Orchestration ----------------------------------------------------------------

#: Seconds between sweeps that time out agent tasks whose worker never reported, and re-send lost events.
AGENTS_ORCHESTRATION_SWEEP_S = _beat_seconds("AGENTS_ORCHESTRATION_SWEEP_S", 15.0)
CELERY_BEAT_SCHEDULE.update({
    "agent-tasks-reap": {
        "task": "workers.agents.agent_tasks_reap",
        "schedule": AGENTS_ORCHESTRATION_SWEEP_S,
        "options": {"expire_seconds": AGENTS_ORCHESTRATION_SWEEP_S},
    },
    "events-relay": {
        "task": "workers.agents.events_relay",
        "schedule": AGENTS_ORCHESTRATION_SWEEP_S,
        "options": {"expire_seconds": AGENTS_ORCHESTRATION_SWEEP_S},
    },
})

# --- JSON API (Django REST framework) ------------------------------------------------

#: Items per page of a list when the request names no ``page_size``, and the most it may name.
AGENTS_API_PAGE_SIZE = env.int("AGENTS_API_PAGE_SIZE", default=50)
AGENTS_API_MAX_PAGE_SIZE = env.int("AGENTS_API_MAX_PAGE_SIZE", default=500)
#: Largest JSON request body the API reads, in bytes; a larger one is refused with 413.
AGENTS_API_MAX_BODY_BYTES = env.int("AGENTS_API_MAX_BODY_BYTES", default=2_621_440)
#: Django's own limit on a body it reads (forms, and the API before its parser): the same, so a larger API request
#: is answered 413 at the documented limit, never 400.
DATA_UPLOAD_MAX_MEMORY_SIZE = AGENTS_API_MAX_BODY_BYTES
#: Where request counts for throttling are kept: Redis when ``CACHE_URL`` names it (shared by every web process),
#: else the process's own memory.
AGENTS_API_THROTTLE_CACHE_URL = CACHE_URL
#: Failed authentications (a wrong token, password or session) allowed per client address, on the API and /metrics
#: together (``N/second``, ``/minute``, ``/hour``, ``/day``); beyond them every request from the address is answered
#: 429 with ``Retry-After`` until the window, opened by the first failure, closes. Empty: no limit.
AGENTS_API_THROTTLE_AUTH_FAILURES = env.str("AGENTS_API_THROTTLE_AUTH_FAILURES", default="10/minute")
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: an unauthenticated request is answered 401 with ``WWW-Authenticate: Token``. Both are DRF's,
        # counting failed authentications per address; the token one refuses an address over the limit first.
        "agents.api.throttling.FailureLimitedTokenAuthentication",
        "agents.api.throttling.FailureLimitedSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["agents.api.permissions.ModelActionPermission"],
    "DEFAULT_PAGINATION_CLASS": "agents.api.policies.ApiPagination",
    "PAGE_SIZE": AGENTS_API_PAGE_SIZE,
    "DEFAULT_PARSER_CLASSES": ["agents.api.policies.LimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_THROTTLE_CLASSES": [
        "agents.api.throttling.ApiAnonRateThrottle",
        "agents.api.throttling.ApiUserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("AGENTS_API_THROTTLE_ANON", default="60/minute"),
        "user": env.str("AGENTS_API_THROTTLE_USER", default="1200/minute"),
    },
    "EXCEPTION_HANDLER": "agents.api.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "agents.api.schema.ApiSchema",
    # Proxies in front of web that append to X-Forwarded-For (docker-compose: the TLS proxy, 1): the client's own
    # address is then counted for the anonymous rate and failed authentications. Unset: REMOTE_ADDR, and the header
    # is ignored (a client writes what it likes there).
    "NUM_PROXIES": env.int("AGENTS_NUM_PROXIES", default=None),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "agentsite API",
    "DESCRIPTION": "Operate agentsite's agents, workflows, decisions, data pipelines, checks and alerts. "
                   "Authenticate with `Authorization: Token <key>` (`manage.py api_token create USER`) or a session.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["agents.api.permissions.ModelActionPermission"],
    # Swagger UI's scripts and styles from drf-spectacular-sidecar's static files, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/",
    # One schema component per set of choices, named after the model's choices.
    "ENUM_NAME_OVERRIDES": {
        f"{name}Enum": f"agents.models.{name}"
        for name in ("AgentType", "AgentStatus", "RunStatus", "StepStatus", "VersionStatus", "DecisionEngine",
                     "DataRunStatus", "CheckType", "CheckStatus", "AlertState", "Severity", "ThresholdDirection",
                     "AgentTaskStatus", "MessageType", "MessageStatus")
    },
}
