"""On PostgreSQL, a change of a data run's, workflow run's or agent task's status is announced on the channel
``agents_status`` (payload ``TABLE:ID``, sent when the change commits), so a command's ``--wait`` wakes when the
record it waits for finishes instead of at its next look (``agents.management.base.wait_for_status``)."""
from django.db import migrations

#: The tables whose status a command waits for, and the channel their changes are announced on.
TABLES = ("agents_datarun", "agents_workflowrun", "agents_agenttask")
CHANNEL = "agents_status"

FUNCTION_UP = f"""
CREATE OR REPLACE FUNCTION agents_status_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME || ':' || NEW.id);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
"""


def up(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return  # the waiting command looks again now and then, as it does everywhere
    schema_editor.execute(FUNCTION_UP, params=None)
    for table in TABLES:
        schema_editor.execute(f"CREATE TRIGGER {table}_status_notify AFTER UPDATE OF status ON {table} FOR EACH ROW "
                              "WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION agents_status_notify()")


def down(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_status_notify ON {table}")
    schema_editor.execute("DROP FUNCTION IF EXISTS agents_status_notify()")


class Migration(migrations.Migration):

    dependencies = [("agents", "0024_decision_id_uuid7")]

    operations = [migrations.RunPython(up, down, elidable=False)]
