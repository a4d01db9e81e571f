"""A workflow's or pipeline's version may hold the content of an older one: loading an older text again (a revert)
makes it the newest version, as a version of its own, instead of answering with the older version while the newest
(the one runs by name and schedules use) stays the other."""
from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("agents", "0026_message_claimed_until"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="pipelineversion", name="pipeline_version_hash_unique"),
        migrations.RemoveConstraint(model_name="workflowversion", name="workflow_version_hash_unique"),
    ]
