"""Read-side queries of decisions."""
from agents.models import RuleSet


def ruleset_list() -> list[dict]:
    """Every rule set with its versions (newest first), hit policy and rule count of the newest version."""
    rows = []
    for ruleset in RuleSet.objects.select_related("team__group").prefetch_related("versions").order_by("name"):
        versions = sorted(ruleset.versions.all(), key=lambda v: -v.number)
        newest = versions[0].spec if versions else {}
        rows.append({
            "name": ruleset.name,
            "description": ruleset.description,
            "hit_policy": newest.get("hit_policy"),
            "rules": len(newest.get("rules", [])),
            "versions": [{"version": v.number, "status": v.status, "shadow": v.shadow, "content_hash": v.content_hash}
                         for v in versions],
            "team": ruleset.team.name,
        })
    return rows
