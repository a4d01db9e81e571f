"""An agent task records the team it acts for (the definitions it runs must be that team's), and the claim of the
delivery running it: a second delivery of the same attempt runs nothing while that claim holds."""
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("agents", "0027_version_content_may_repeat"),
    ]

    operations = [
        migrations.AddField(
            model_name="agenttask",
            name="team",
            field=models.ForeignKey(
                blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name="+",
                to="agents.team",
                help_text="The team the task acts for: the definitions it runs must be this team's. Empty: submitted "
                          "by a command, a superuser or the system, acting for no team in particular.",
            ),
        ),
        migrations.AddField(
            model_name="agenttask",
            name="claimed_until",
            field=models.DateTimeField(
                blank=True, null=True,
                help_text="While a delivery runs the task: when that claim lapses (past the task's hard time limit) "
                          "and another delivery of the same attempt may take it. Empty when no delivery runs it.",
            ),
        ),
    ]
