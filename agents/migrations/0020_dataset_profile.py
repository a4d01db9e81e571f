from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('agents', '0019_decision_audit_indexes'),
    ]

    operations = [
        migrations.AddField(
            model_name='dataset',
            name='profile',
            field=models.JSONField(blank=True, default=dict, help_text='Column statistics computed when it was published: {rows, columns: [{name, kind, count, nulls, distinct, min, max, mean, std, quantiles, top, histogram}]} ({} when not profiled).'),
        ),
    ]
