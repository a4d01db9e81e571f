"""The purge on an embedded install's SQLite, capped as SQLite before 3.32 is (999 variables per statement)."""
import json
import textwrap

from tests.conftest import embedded_install, manage
from tests.decisions.conftest import LOANS

#: Run in ``manage.py shell`` on the embedded install: every connection takes at most 999 variables per statement;
#: 1,200 decisions are made, then purged as if a year had passed.
SCRIPT = textwrap.dedent("""
    import json, sqlite3, textwrap
    from datetime import timedelta
    from django.db import connection
    from django.db.backends.signals import connection_created
    from django.utils import timezone
    from agents.decisions import services
    from agents.models import Decision

    def cap(sender, connection, **kwargs):
        connection.connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)

    connection.close()
    connection_created.connect(cap)
    services.rules_load(text=textwrap.dedent(RULES), activate=True)
    services.decide_many(ruleset="loans", contexts=[{"amount": n, "applicant": {"score": 700}} for n in range(1200)],
                         use_cache=False)
    made = Decision.objects.count()
    try:
        Decision.objects.filter(pk__in=list(range(1, 1001))).count()
        capped = False
    except Exception as error:
        capped = "too many SQL variables" in str(error)
    purged = services.decisions_purge(older_than=timedelta(days=365), now=timezone.now() + timedelta(days=400))
    print(json.dumps({"made": made, "capped": capped, "purged": purged, "left": Decision.objects.count()}))
""")


def test_a_purge_of_more_decisions_than_sqlite_takes_variables_deletes_them_all(tmp_path, embedded_migrated):
    env = embedded_install(tmp_path, embedded_migrated)

    result = manage("shell", "-c", f"RULES = {LOANS!r}\n{SCRIPT}", env=env)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"made": 1200, "capped": True, "purged": 1200, "left": 0}
