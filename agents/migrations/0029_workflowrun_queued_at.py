"""When a run began to wait for its workflow's max_active_runs: queued runs start in that order, so a re-run queued
later goes behind the runs that were waiting before it (ordered by when it was created, it went ahead of them)."""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("agents", "0028_agenttask_team"),
    ]

    operations = [
        migrations.AddField(
            model_name="workflowrun",
            name="queued_at",
            field=models.DateTimeField(
                blank=True, null=True,
                help_text="When it last began to wait (max_active_runs): queued runs start in that order."),
        ),
    ]
