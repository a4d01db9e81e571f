"""The decision audit's references (rule set, version, model version) are kept by triggers instead of foreign key
constraints: a foreign key checks each inserted row on its own (two or three index look-ups per decision, about
40 % of the database's work when a batch COPYs its audit), while every row of a batch names the same rule set
and version. On PostgreSQL one statement-level trigger checks the distinct references of each INSERT or COPY
statement at its end, locking the referenced rows as a foreign key check does (FOR KEY SHARE), so a concurrent
delete of a rule set version waits for the batch to commit; a deferred constraint trigger on each referenced
table refuses, at commit, the delete of a row some decision still names. The same guarantees as before: a
decision naming a missing rule set, version or model version is refused (SQLSTATE 23503, an IntegrityError),
and so is deleting what the audit names. On SQLite, row triggers do the same."""
import django.db.models.deletion
from django.db import migrations, models

MESSAGE = "the decision audit names"

POSTGRES_UP = f"""
CREATE OR REPLACE FUNCTION agents_decision_references() RETURNS trigger AS $$
DECLARE
    missing bigint;
BEGIN
    SELECT wanted.id INTO missing FROM (SELECT DISTINCT ruleset_id AS id FROM inserted) wanted
        LEFT JOIN (SELECT id FROM agents_ruleset WHERE id IN (SELECT ruleset_id FROM inserted) FOR KEY SHARE) kept
        ON kept.id = wanted.id WHERE kept.id IS NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'decision refused: rule set % does not exist', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT wanted.id INTO missing FROM (SELECT DISTINCT version_id AS id FROM inserted) wanted
        LEFT JOIN (SELECT id FROM agents_rulesetversion WHERE id IN (SELECT version_id FROM inserted) FOR KEY SHARE)
        kept ON kept.id = wanted.id WHERE kept.id IS NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'decision refused: rule set version % does not exist', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT wanted.id INTO missing
        FROM (SELECT DISTINCT model_version_id AS id FROM inserted WHERE model_version_id IS NOT NULL) wanted
        LEFT JOIN (SELECT id FROM agents_decisionmodelversion
                   WHERE id IN (SELECT model_version_id FROM inserted) FOR KEY SHARE) kept
        ON kept.id = wanted.id WHERE kept.id IS NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'decision refused: model version % does not exist', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER agents_decision_references AFTER INSERT ON agents_decision
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION agents_decision_references();

CREATE OR REPLACE FUNCTION agents_decision_referenced() RETURNS trigger AS $$
BEGIN
    IF TG_TABLE_NAME = 'agents_ruleset' THEN
        PERFORM 1 FROM agents_decision WHERE ruleset_id = OLD.id LIMIT 1;
    ELSIF TG_TABLE_NAME = 'agents_rulesetversion' THEN
        PERFORM 1 FROM agents_decision WHERE version_id = OLD.id LIMIT 1;
    ELSE
        PERFORM 1 FROM agents_decision WHERE model_version_id = OLD.id LIMIT 1;
    END IF;
    IF FOUND THEN
        RAISE EXCEPTION '{MESSAGE} % %: it cannot be deleted', TG_TABLE_NAME, OLD.id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE CONSTRAINT TRIGGER agents_decision_ruleset_kept AFTER DELETE ON agents_ruleset
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION agents_decision_referenced();
CREATE CONSTRAINT TRIGGER agents_decision_version_kept AFTER DELETE ON agents_rulesetversion
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION agents_decision_referenced();
CREATE CONSTRAINT TRIGGER agents_decision_model_version_kept AFTER DELETE ON agents_decisionmodelversion
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION agents_decision_referenced();
"""
POSTGRES_DOWN = """
DROP TRIGGER IF EXISTS agents_decision_references ON agents_decision;
DROP TRIGGER IF EXISTS agents_decision_ruleset_kept ON agents_ruleset;
DROP TRIGGER IF EXISTS agents_decision_version_kept ON agents_rulesetversion;
DROP TRIGGER IF EXISTS agents_decision_model_version_kept ON agents_decisionmodelversion;
DROP FUNCTION IF EXISTS agents_decision_references();
DROP FUNCTION IF EXISTS agents_decision_referenced();
"""
#: (referenced table, the decision's column) on SQLite, where row triggers keep the references.
SQLITE_REFERENCES = (("agents_ruleset", "ruleset_id"), ("agents_rulesetversion", "version_id"),
                     ("agents_decisionmodelversion", "model_version_id"))


def up(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_UP, params=None)  # no placeholders: RAISE uses % itself
    elif vendor == "sqlite":
        for table, column in SQLITE_REFERENCES:
            schema_editor.execute(
                f"CREATE TRIGGER agents_decision_{column}_exists BEFORE INSERT ON agents_decision "
                f"WHEN NEW.{column} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {table} WHERE id = NEW.{column}) "
                f"BEGIN SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed: {table} does not exist'); END;")
            schema_editor.execute(
                f"CREATE TRIGGER agents_decision_{column}_kept BEFORE DELETE ON {table} "
                f"WHEN EXISTS (SELECT 1 FROM agents_decision WHERE {column} = OLD.id) "
                f"BEGIN SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed: {MESSAGE} this {table} row'); END;")


def down(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_DOWN)
    elif vendor == "sqlite":
        for _table, column in SQLITE_REFERENCES:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS agents_decision_{column}_exists;")
            schema_editor.execute(f"DROP TRIGGER IF EXISTS agents_decision_{column}_kept;")


class Migration(migrations.Migration):

    dependencies = [("agents", "0021_plugin_checks")]

    operations = [
        migrations.AlterField(
            model_name="decision",
            name="model_version",
            field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True,
                                    on_delete=django.db.models.deletion.PROTECT, related_name="decisions",
                                    to="agents.decisionmodelversion"),
        ),
        migrations.AlterField(
            model_name="decision",
            name="ruleset",
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT,
                                    related_name="decisions", to="agents.ruleset"),
        ),
        migrations.AlterField(
            model_name="decision",
            name="version",
            field=models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.PROTECT,
                                    related_name="decisions", to="agents.rulesetversion"),
        ),
        migrations.RunPython(up, down, elidable=False),
    ]
