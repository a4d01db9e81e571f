"""Step attempts: no index on (run, status) and none of the run foreign key's own; the unique (run, step_id, attempt)
index leads with the run and serves every lookup by run. A new run's id is past the planner's statistics, so with a
shorter index on the run at hand it scanned all of the run's steps to find one step, in each claim and each read of
a step's inputs; with the unique index alone it goes to the step. Each step's two updates also maintain two indexes
fewer."""
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('agents', '0022_decision_references_per_statement'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='steprun',
            name='step_run_run_status',
        ),
        migrations.AlterField(
            model_name='steprun',
            name='run',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                    related_name='step_runs', to='agents.workflowrun'),
        ),
    ]
