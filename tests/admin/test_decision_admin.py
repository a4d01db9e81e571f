"""The decision admin: loading rule set versions with their errors in the form, trying a version, the audit, models.

Rule sets are loaded through the services; decisions are made without shadow drafts, so nothing is sent to the broker.
"""
import html
import re
import textwrap
from datetime import timedelta

import pytest
from django.contrib import messages
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from agents.api.groups import VIEWERS
from agents.core.teams import team_create, team_default
from agents.decisions import services
from agents.models import Decision, DecisionModelVersion, RuleSet, RuleSetVersion, ShadowComparison
from tests.conftest import audit_triggers_off
from tests.decisions.conftest import LOANS, load

pytestmark = pytest.mark.django_db

APPLICATION = {"amount": 5000, "applicant": {"score": 720, "email": "ann@example.com"}}
LOANS_V2 = LOANS.replace("applicant.score < 500", "applicant.score < 550")
BROKEN = """
    name: broken
    hit_policy: first
    rules:
      - {id: bad-syntax, condition: "amount >", decision: reject}
      - {id: no-decision, condition: "amount > 1"}
      - {id: bad-priority, condition: "amount > 2", decision: approve, priority: high}
"""
OVERLAPPING = """
    name: strict
    hit_policy: unique
    default: {decision: none, confidence: 0.0}
    rules:
      - {id: big, condition: "amount > 100", decision: review}
      - {id: huge, condition: "amount > 1000", decision: reject}
"""
SCRIPT = "<script>alert('x')</script>"
SCRIPTED = """
    name: scripted
    hit_policy: first
    default: {decision: none, confidence: 0.0}
    rules:
      - {id: always, condition: "amount >= 0", decision: "<script>alert('x')</script>"}
"""


def post_load(admin_client, text: str, **flags):
    """Submit the "Load a version" form."""
    data = {"source": textwrap.dedent(text), **{flag: "on" for flag, checked in flags.items() if checked}}
    return admin_client.post(reverse("admin:agents_ruleset_load"), data, follow=True)


def reported(response) -> list[tuple[int, str]]:
    return [(message.level, str(message)) for message in response.context["messages"]]


def run_action(admin_client, model: str, action: str, objects) -> list[tuple[int, str]]:
    """Post a changelist action of ``model`` on ``objects``; return the messages as (level, text)."""
    response = admin_client.post(reverse(f"admin:agents_{model}_changelist"),
                                 {"action": action, "_selected_action": [str(obj.pk) for obj in objects]}, follow=True)
    return reported(response)


def try_url(version) -> str:
    return reverse("admin:agents_rulesetversion_try", args=[version.pk])


def audit(*, engine: str = "rules", needs_review: bool = False, decision="approve", **fields) -> Decision:
    """An audited decision of the active loans version, written directly (as the services write them)."""
    version = RuleSetVersion.objects.get(ruleset__name="loans", status="active")
    return Decision.objects.create(
        ruleset=version.ruleset, version=version, context={"amount": 5000, "applicant": {"email": "***"}},
        decision=decision, confidence=0.9, engine=engine, needs_review=needs_review, latency_ms=1.5,
        reasoning="rule 'solid' matched", rule_ids=["solid"] if engine == "rules" else [], **fields,
    )


# --- loading versions ----------------------------------------------------------------


def test_loading_a_valid_definition_stores_it_and_activates_it_when_asked(admin_client):
    response = post_load(admin_client, LOANS, activate=True)

    version = RuleSetVersion.objects.get(ruleset__name="loans")
    assert version.status == "active" and version.number == 1
    assert response.redirect_chain[-1][0] == reverse("admin:agents_rulesetversion_change", args=[version.pk])
    assert (messages.SUCCESS, "Loaded loans v1 (active).") in reported(response)


def test_loading_without_activate_stores_a_draft_beside_the_active_version(admin_client):
    load(LOANS)

    response = post_load(admin_client, LOANS_V2, shadow=True)

    statuses = dict(RuleSetVersion.objects.filter(ruleset__name="loans").values_list("number", "status"))
    assert statuses == {1: "active", 2: "draft"}
    assert RuleSetVersion.objects.get(ruleset__name="loans", number=2).shadow is True
    assert (messages.SUCCESS, "Loaded loans v2 (draft, shadowed).") in reported(response)


def test_loading_an_invalid_definition_shows_every_problem_in_the_form_and_stores_nothing(admin_client):
    response = post_load(admin_client, BROKEN, activate=True)

    errors = response.context["form"].errors["source"]
    page = response.content.decode()
    assert response.status_code == 200
    assert len(errors) == 3
    for rule_id in ("bad-syntax", "no-decision", "bad-priority"):
        problem = next(error for error in errors if f"rule '{rule_id}'" in error)
        assert html.escape(problem) in page  # each problem is listed under the text, escaped
    assert "decision is missing" in " ".join(errors)
    assert "The definition has 3 problems" in page
    assert not RuleSet.objects.exists() and not RuleSetVersion.objects.exists()


def test_unreadable_text_names_the_line(admin_client):
    response = post_load(admin_client, "name: x\nrules: [\n")

    assert response.status_code == 200
    assert "not valid YAML or JSON at line" in response.context["form"].errors["source"][0]
    assert not RuleSet.objects.exists()


def test_loading_identical_content_again_stores_nothing_new(admin_client):
    load(LOANS)

    response = post_load(admin_client, LOANS)

    assert RuleSetVersion.objects.count() == 1
    assert (messages.WARNING, "This definition is already stored as loans v1; nothing new was stored.") \
        in reported(response)


def test_activate_and_shadow_together_are_refused(admin_client):
    response = post_load(admin_client, LOANS, activate=True, shadow=True)

    assert response.status_code == 200
    assert "Choose either activate or shadow" in response.context["form"].non_field_errors()[0]
    assert not RuleSetVersion.objects.exists()


def test_a_new_version_can_start_from_the_newest_ones_text(admin_client):
    version = load(LOANS)

    response = admin_client.get(reverse("admin:agents_ruleset_load"), {"ruleset": version.ruleset_id})

    assert "applicant.score &lt; 500" in response.content.decode()


# --- rule sets and versions -------------------------------------------------------------


def test_rule_set_list_shows_the_active_version_and_counts(admin_client):
    load(LOANS)
    load(LOANS_V2, activate=True)
    audit()
    audit()

    response = admin_client.get(reverse("admin:agents_ruleset_changelist"))

    page = response.content.decode()
    row = re.search(r"<tr>.*?loans.*?</tr>", page, re.S).group(0)
    assert '<td class="field-active_version">2</td>' in row
    assert re.search(r'field-version_count"><a href="[^"]*ruleset__id__exact=\d+">2</a>', row)
    assert re.search(r'field-decision_count"><a href="[^"]*ruleset__id__exact=\d+">2</a>', row)
    assert reverse("admin:agents_ruleset_load") in page  # the "Load a version" button


def test_rule_set_list_queries_do_not_grow_with_the_rule_sets_shown(admin_client):
    load(LOANS)
    changelist = reverse("admin:agents_ruleset_changelist")
    admin_client.get(changelist)
    with CaptureQueriesContext(connection) as one:
        admin_client.get(changelist)
    for name in ("a", "b", "c"):
        load(LOANS.replace("name: loans", f"name: {name}"))
    with CaptureQueriesContext(connection) as four:
        admin_client.get(changelist)

    assert len(four) == len(one)


def test_version_page_shows_the_rules_as_a_table_and_cannot_be_edited(admin_client):
    version = load(LOANS)
    change = reverse("admin:agents_rulesetversion_change", args=[version.pk])

    page = admin_client.get(change).content.decode()
    refused = admin_client.post(change, {"shadow": "on"})

    rules = dict(re.findall(r'<tr class="dc-rule" data-rule="([\w.-]+)">(.*?)</tr>', page, re.S))
    assert list(rules) == ["low-score", "solid"]
    assert "applicant.score &lt; 500" in rules["low-score"] and "&quot;reject&quot;" in rules["low-score"]
    assert "<td>50</td>" in rules["low-score"] and "<td>0.95</td>" in rules["low-score"]
    assert try_url(version) in page
    assert 'name="_save"' not in page
    assert refused.status_code == 403


def test_activate_action_activates_a_draft_and_retires_the_active_version(admin_client):
    first = load(LOANS)
    second = load(LOANS_V2, activate=False)

    messages_shown = run_action(admin_client, "rulesetversion", "activate_versions", [second])

    first.refresh_from_db()
    second.refresh_from_db()
    assert messages_shown == [(messages.SUCCESS, "Activated 1 version.")]
    assert (first.status, second.status) == ("retired", "active")


def test_activating_two_versions_of_one_rule_set_is_refused(admin_client):
    first = load(LOANS)
    second = load(LOANS_V2, activate=False)

    messages_shown = run_action(admin_client, "rulesetversion", "activate_versions", [first, second])

    second.refresh_from_db()
    assert messages_shown == [(messages.ERROR, "Rule set loans: select one version to make active, not 2 (v1, v2).")]
    assert second.status == "draft"


# --- try it ------------------------------------------------------------------------------


def test_try_page_offers_a_context_with_the_fields_the_rules_read(admin_client):
    version = load(LOANS)

    response = admin_client.get(try_url(version))

    initial = response.context["form"].initial["context"]
    assert response.status_code == 200
    assert '"amount": null' in initial and '"score": null' in initial


def test_try_shows_the_decision_and_the_trace_without_auditing(admin_client):
    version = load(LOANS)

    response = admin_client.post(try_url(version), {"context": '{"amount": 5000, "applicant": {"score": 720}}'})

    page = response.content.decode()
    trace = dict(re.findall(r'<tr class="dc-trace-rule" data-rule="([\w.-]+)">(.*?)</tr>', page, re.S))
    assert response.status_code == 200
    assert '<code class="dc-decision">&quot;approve&quot;</code>' in page
    assert '<td class="dc-matched">solid</td>' in page
    assert "rule &#x27;solid&#x27; matched" in page
    assert list(trace) == ["low-score", "solid"]
    assert "wf-skipped" in trace["low-score"] and "wf-succeeded" in trace["solid"]
    assert "applicant.score = 720" in trace["low-score"]
    assert "amount = 5000" in trace["solid"] and "applicant.score &lt; 500" in trace["low-score"]
    assert not Decision.objects.exists()


def test_try_evaluates_the_chosen_version_not_the_active_one(admin_client):
    load(LOANS)
    draft = load(LOANS_V2, activate=False)

    response = admin_client.post(try_url(draft), {"context": '{"amount": 50000, "applicant": {"score": 520}}'})

    assert response.context["result"]["decision"] == '"reject"'  # 520 < 550 only in the draft
    assert response.context["result"]["rule_ids"] == ["low-score"]


def test_try_traces_a_jsonlogic_rule_with_the_values_it_read(admin_client):
    version = load("""
        name: logic
        hit_policy: first
        default: {decision: regular, confidence: 0.0}
        rules:
          - {id: vip, jsonlogic: {">": [{var: spend}, 1000]}, decision: vip}
    """)

    response = admin_client.post(try_url(version), {"context": '{"spend": 1500}'})

    trace = response.context["result"]["trace"]
    assert response.context["result"]["decision"] == '"vip"'
    assert trace[0]["matched"] and trace[0]["clauses"][0]["reads"] == [("spend", "1500")]
    assert "spend = 1500" in response.content.decode()


def test_try_shows_the_default_when_nothing_matches(admin_client):
    version = load(LOANS)

    response = admin_client.post(try_url(version), {"context": '{"amount": 50000, "applicant": {"score": 600}}'})

    assert response.context["result"]["decision"] == '"manual_review"'
    assert "no rule matched; the default applies" in response.content.decode()


@pytest.mark.parametrize("text, problem", [
    ('{"amount": ', "not valid JSON: Expecting value at line 1, column 12"),
    ("[1, 2]", "the context must be a JSON object, got list"),
    ('{"amount": NaN}', "not valid JSON: NaN is not a JSON number"),
])
def test_try_with_bad_json_shows_a_form_error(admin_client, text, problem):
    version = load(LOANS)

    response = admin_client.post(try_url(version), {"context": text})

    assert response.status_code == 200
    assert response.context["form"].errors["context"] == [problem]
    assert html.escape(problem) in response.content.decode()
    assert response.context["result"] is None


def test_try_reports_a_hit_policy_conflict_as_an_error(admin_client):
    version = load(OVERLAPPING)

    response = admin_client.post(try_url(version), {"context": '{"amount": 5000}'})

    assert response.status_code == 200
    assert reported(response) == [(messages.ERROR, "rules 'big', 'huge' all match, but hit policy 'unique' "
                                                   "allows one match only")]
    assert "hit policy &#x27;unique&#x27; allows one match only" in response.content.decode()
    assert response.context["result"] is None


# --- the audit ----------------------------------------------------------------------------


def test_audit_list_filters_by_engine_and_needs_review(admin_client):
    load(LOANS)
    by_rules = audit()
    flagged = audit(engine="default", needs_review=True, decision="manual_review")
    changelist = reverse("admin:agents_decision_changelist")

    default_only = admin_client.get(changelist, {"engine__exact": "default"}).content.decode()
    review_only = admin_client.get(changelist, {"needs_review__exact": "1"}).content.decode()
    rules_only = admin_client.get(changelist, {"engine__exact": "rules", "needs_review__exact": "0"}).content.decode()

    assert str(flagged.decision_id) in default_only and str(by_rules.decision_id) not in default_only
    assert str(flagged.decision_id) in review_only and str(by_rules.decision_id) not in review_only
    assert str(by_rules.decision_id) in rules_only and str(flagged.decision_id) not in rules_only


def test_audit_list_filters_by_date(admin_client):
    load(LOANS)
    recent, old = audit(), audit()
    with audit_triggers_off():
        Decision.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=30))
    since = (timezone.now() - timedelta(days=7)).isoformat()

    page = admin_client.get(reverse("admin:agents_decision_changelist"), {"created_at__gte": since}).content.decode()

    assert str(recent.decision_id) in page and str(old.decision_id) not in page


def test_audit_is_searchable_by_decision_id(admin_client):
    load(LOANS)
    wanted, other = audit(), audit()

    page = admin_client.get(reverse("admin:agents_decision_changelist"),
                            {"q": str(wanted.decision_id)[:13]}).content.decode()

    assert str(wanted.decision_id) in page and str(other.decision_id) not in page


def test_audit_has_no_add_button_and_refuses_changes(admin_client):
    load(LOANS)
    row = audit()
    change = reverse("admin:agents_decision_change", args=[row.pk])

    listing = admin_client.get(reverse("admin:agents_decision_changelist")).content.decode()
    add = admin_client.get(reverse("admin:agents_decision_add"))
    edit = admin_client.post(change, {"decision": '"reject"', "confidence": "0.1"})
    delete = admin_client.post(reverse("admin:agents_decision_delete", args=[row.pk]), {"post": "yes"})

    row.refresh_from_db()
    assert reverse("admin:agents_decision_add") not in listing
    assert 'value="delete_selected"' not in listing
    assert (add.status_code, edit.status_code, delete.status_code) == (403, 403, 403)
    assert row.decision == "approve"


def test_audit_page_shows_the_masked_context_reasoning_and_shadow_comparisons(admin_client):
    load(LOANS)
    result = services.decide(ruleset="loans", context=APPLICATION, use_cache=False)
    row = Decision.objects.get(decision_id=result["decision_id"])
    ShadowComparison.objects.create(decision=row, candidate="version 2", candidate_decision="reject",
                                    candidate_confidence=0.95, agrees=False)

    page = admin_client.get(reverse("admin:agents_decision_change", args=[row.pk])).content.decode()

    assert "&quot;email&quot;: &quot;***&quot;" in page and "ann@example.com" not in page
    assert "rule &#x27;solid&#x27; matched" in page
    assert "version 2" in page and "&quot;reject&quot;" in page
    assert 'name="_save"' not in page


def test_audit_list_queries_do_not_grow_with_the_decisions_shown(admin_client):
    load(LOANS)
    audit()
    changelist = reverse("admin:agents_decision_changelist")
    admin_client.get(changelist)
    with CaptureQueriesContext(connection) as one:
        admin_client.get(changelist)
    for _ in range(5):
        audit()
    with CaptureQueriesContext(connection) as six:
        admin_client.get(changelist)

    assert len(six) == len(one)


# --- models -------------------------------------------------------------------------------


def make_model(number: int, *, alias: str = "", accuracy: float = 0.9, rows: int = 100) -> DecisionModelVersion:
    ruleset = RuleSet.objects.get(name="loans")
    return DecisionModelVersion.objects.create(
        ruleset=ruleset, number=number, path=f"loans/v{number}.skops", sha256="ab" * 32, alias=alias,
        features=[{"name": "amount", "type": "number"}], classes=['"approve"', '"reject"'],
        metrics={"holdout_accuracy": accuracy, "rows": rows},
    )


def test_model_list_and_page_show_the_metrics(admin_client):
    load(LOANS)
    model = make_model(1, alias="champion")

    listing = admin_client.get(reverse("admin:agents_decisionmodelversion_changelist")).content.decode()
    page = admin_client.get(reverse("admin:agents_decisionmodelversion_change", args=[model.pk])).content.decode()

    assert '<td class="field-holdout_accuracy">0.900</td>' in listing
    assert '<td class="field-rows">100</td>' in listing
    assert '<span class="wf-status wf-champion">Champion</span>' in listing
    assert "&quot;holdout_accuracy&quot;: 0.9" in page and "&quot;rows&quot;: 100" in page
    assert "&quot;amount&quot;" in page


def test_promote_makes_the_model_champion_and_the_old_champion_loses_the_alias(admin_client, monkeypatch):
    load(LOANS)
    old, new = make_model(1, alias="champion"), make_model(2)
    monkeypatch.setattr("agents.decisions.ml.model_read", lambda path, sha256, trusted_types: object())  # its file

    messages_shown = run_action(admin_client, "decisionmodelversion", "promote_champion", [new])

    old.refresh_from_db()
    new.refresh_from_db()
    assert messages_shown == [(messages.SUCCESS, "1 model made champion.")]
    assert (old.alias, new.alias) == ("", "champion")


def test_promoting_a_model_whose_file_is_missing_is_refused_and_the_champion_stays(admin_client):
    load(LOANS)
    old, new = make_model(1, alias="champion"), make_model(2)  # rows only: no file on disk

    messages_shown = run_action(admin_client, "decisionmodelversion", "promote_champion", [new])

    old.refresh_from_db()
    new.refresh_from_db()
    assert [level for level, _ in messages_shown] == [messages.ERROR]
    assert "model v2 cannot be promoted: model file" in messages_shown[0][1]
    assert (old.alias, new.alias) == ("champion", "")


def test_make_challenger_refuses_two_models_of_one_rule_set(admin_client):
    load(LOANS)
    first, second = make_model(1), make_model(2)

    messages_shown = run_action(admin_client, "decisionmodelversion", "make_challenger", [first, second])

    assert messages_shown == [(messages.ERROR, "Rule set loans: select one model to make challenger, not 2 (v1, v2).")]
    assert not DecisionModelVersion.objects.exclude(alias="").exists()


def test_activating_the_active_version_changes_nothing_and_says_so(admin_client):
    version = load(LOANS)

    messages_shown = run_action(admin_client, "rulesetversion", "activate_versions", [version])

    assert messages_shown == [(messages.WARNING, "loans version 1 is already active.")]


# --- shadow comparisons, access and escaping -----------------------------------------------


def test_shadow_comparisons_filter_by_agreement(admin_client):
    load(LOANS)
    agreeing = ShadowComparison.objects.create(decision=audit(), candidate="version 2", candidate_decision="approve",
                                               agrees=True)
    disagreeing = ShadowComparison.objects.create(decision=audit(), candidate="version 2",
                                                  candidate_decision="reject", agrees=False)

    listing = admin_client.get(reverse("admin:agents_shadowcomparison_changelist"), {"agrees__exact": "0"})

    page = listing.content.decode()
    assert str(disagreeing.decision.decision_id) in page and str(agreeing.decision.decision_id) not in page


@pytest.mark.parametrize("url_name, needs_object", [
    ("admin:agents_ruleset_changelist", False),
    ("admin:agents_ruleset_change", True),
    ("admin:agents_ruleset_load", False),
    ("admin:agents_rulesetversion_changelist", False),
    ("admin:agents_rulesetversion_change", True),
    ("admin:agents_rulesetversion_try", True),
    ("admin:agents_decision_changelist", False),
    ("admin:agents_decision_change", True),
    ("admin:agents_decisionmodelversion_changelist", False),
    ("admin:agents_decisionmodelversion_change", True),
    ("admin:agents_shadowcomparison_changelist", False),
])
def test_anonymous_users_are_redirected_to_login(client, url_name, needs_object):
    version = load(LOANS)
    decision = audit()
    model = make_model(1)
    objects = {"ruleset": version.ruleset_id, "rulesetversion": version.pk, "decision": decision.pk,
               "decisionmodelversion": model.pk}
    args = [objects[url_name.split("_")[1]]] if needs_object else []

    response = client.get(reverse(url_name, args=args))
    posted = client.post(reverse(url_name, args=args), {"context": "{}", "source": LOANS})

    assert response.status_code == 302 and posted.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert RuleSetVersion.objects.count() == 1


def test_staff_who_may_only_view_versions_cannot_load_or_activate(client, django_user_model):
    from django.contrib.auth.models import Permission

    version = load(LOANS, activate=False)
    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_ruleset", "view_rulesetversion"]))
    viewer.groups.add(team_default().group)  # the version's team: another team's version is not found
    client.force_login(viewer)

    listing = client.get(reverse("admin:agents_rulesetversion_changelist")).content.decode()
    page = client.get(reverse("admin:agents_rulesetversion_change", args=[version.pk])).content.decode()
    loading = client.post(reverse("admin:agents_ruleset_load"), {"source": LOANS_V2})
    trying = client.post(try_url(version), {"context": "{}"})

    assert 'value="activate_versions"' not in listing
    assert "Load a new version from this one" not in page  # it linked to the page that refuses them
    assert loading.status_code == 403
    assert trying.status_code == 200  # trying changes nothing: viewing is enough
    assert RuleSetVersion.objects.count() == 1


def test_decision_values_are_escaped_everywhere(admin_client):
    version = load(SCRIPTED)
    result = services.decide(ruleset="scripted", context={"amount": 1}, use_cache=False)
    row = Decision.objects.get(decision_id=result["decision_id"])

    pages = {
        "version": admin_client.get(reverse("admin:agents_rulesetversion_change", args=[version.pk])),
        "try": admin_client.post(try_url(version), {"context": '{"amount": 1, "note": "<b>bold</b>"}'}),
        "audit list": admin_client.get(reverse("admin:agents_decision_changelist")),
        "audit page": admin_client.get(reverse("admin:agents_decision_change", args=[row.pk])),
    }

    for name, response in pages.items():
        page = response.content.decode()
        assert response.status_code == 200, name
        assert SCRIPT not in page and "<b>bold</b>" not in page, name
        assert "&lt;script&gt;alert(" in page, name


def test_another_teams_version_cannot_be_tried(client, django_user_model):
    version, _ = services.rules_load(text=textwrap.dedent(LOANS), activate=True, team=team_create(name="team-a")[0])
    bob = django_user_model.objects.create_user("bob", password="x", is_staff=True)
    bob.groups.add(Group.objects.get(name=VIEWERS), team_create(name="team-b")[0].group)
    client.force_login(bob)

    shown = client.get(try_url(version))
    posted = client.post(try_url(version), {"context": '{"amount": 5000, "applicant": {"score": 720}}'})

    assert shown.status_code == 404 and posted.status_code == 404
    assert "loans" not in shown.content.decode() and "solid" not in posted.content.decode()
    assert not Decision.objects.exists()


@pytest.mark.parametrize("object_id", ["abc", "%C2%B2", "99999999999999999999999"])
def test_a_try_page_of_an_id_that_cannot_be_one_is_not_found(admin_client, object_id):
    load(LOANS)

    response = admin_client.get(f"/admin/agents/rulesetversion/{object_id}/try/")

    assert response.status_code == 404


@pytest.mark.parametrize("ruleset", ["%C2%B2", "99999999999999999999999"])
def test_loading_from_a_rule_set_id_that_cannot_be_one_starts_empty(admin_client, ruleset):
    load(LOANS)

    response = admin_client.get(f"{reverse('admin:agents_ruleset_load')}?ruleset={ruleset}")

    assert response.status_code == 200
    assert "applicant.score &lt; 500" not in response.content.decode()
