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
            # A DMN model (spec format "dmn") shows as such, with its decisions counted as its rules.
            "hit_policy": "dmn" if newest.get("format") == "dmn" else newest.get("hit_policy"),
            "rules": len(newest.get("rules", newest.get("decisions", []))),
            "versions": [{"version": v.number, "status": v.status, "shadow": v.shadow, "content_hash": v.content_hash}
                         for v in versions],
            "team": ruleset.team.name,
        })
    return rows
