"""The decision audit is append-only in the database itself: UPDATE and DELETE of a decision are refused by a
trigger, whatever code (or SQL) tries them. Only ``decisions_purge`` deletes, and only old rows: on PostgreSQL it
sets ``agents.decision_purge`` for its own transaction; on SQLite it drops and recreates the DELETE trigger
inside its transaction."""
from django.db import migrations

MESSAGE = "the decision audit is append-only"

POSTGRES_UP = f"""
CREATE OR REPLACE FUNCTION agents_decision_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('agents.decision_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '{MESSAGE}: % of decision % refused', TG_OP, OLD.decision_id
        USING ERRCODE = 'integrity_constraint_violation';
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER agents_decision_append_only BEFORE UPDATE OR DELETE ON agents_decision
    FOR EACH ROW EXECUTE FUNCTION agents_decision_append_only();
"""
POSTGRES_DOWN = """
DROP TRIGGER IF EXISTS agents_decision_append_only ON agents_decision;
DROP FUNCTION IF EXISTS agents_decision_append_only();
"""
SQLITE_UPDATE = (f"CREATE TRIGGER agents_decision_no_update BEFORE UPDATE ON agents_decision "
                 f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}: UPDATE refused'); END;")
SQLITE_DELETE = (f"CREATE TRIGGER agents_decision_no_delete BEFORE DELETE ON agents_decision "
                 f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}: DELETE refused'); END;")


def up(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_UP, params=None)  # no placeholders: RAISE uses % itself
    elif schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(SQLITE_UPDATE)
        schema_editor.execute(SQLITE_DELETE)


def down(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_DOWN)
    elif schema_editor.connection.vendor == "sqlite":
        schema_editor.execute("DROP TRIGGER IF EXISTS agents_decision_no_update;")
        schema_editor.execute("DROP TRIGGER IF EXISTS agents_decision_no_delete;")


class Migration(migrations.Migration):

    dependencies = [("agents", "0010_notification_skipped")]

    operations = [migrations.RunPython(up, down, elidable=False)]
