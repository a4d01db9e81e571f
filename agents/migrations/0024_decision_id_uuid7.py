# decision_id is a version 7 UUID from now on (agents.models.ids); existing ids stay as they are.

import agents.models.ids
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('agents', '0023_step_run_indexes'),
    ]

    # The default is made in Python: nothing changes in the database (SQLite would rebuild the table, and its
    # audit triggers with it, for a default that never reaches the database).
    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.AlterField(
                model_name='decision',
                name='decision_id',
                field=models.UUIDField(default=agents.models.ids.uuid7, editable=False, unique=True),
            ),
        ]),
    ]
