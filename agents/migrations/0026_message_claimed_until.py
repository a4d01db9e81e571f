"""A message's claim: the delivery running its handler holds it until ``claimed_until``, so a second delivery of the
message at the same time leaves it alone, and one whose worker died mid-handle lets it lapse for the next."""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("agents", "0025_run_status_notify"),
    ]

    operations = [
        migrations.AddField(
            model_name="agentmessage",
            name="claimed_until",
            field=models.DateTimeField(
                blank=True, null=True,
                help_text="While a delivery runs its handler: when that claim lapses and another delivery may take it "
                          "(its worker died). Empty when no handler runs it.",
            ),
        ),
    ]
