"""The decision admin with a DMN model: "Load a version" from a .dmn file or its text (model errors in the form), the
version page showing the model's decisions and tables, and "Try it" picking a decision and showing its trace."""
import html
import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from agents.decisions import services
from agents.models import Decision, RuleSetVersion

pytestmark = pytest.mark.django_db

EXPORT = Path(__file__).resolve().parents[2] / "examples" / "rules" / "loan_prequalification.dmn"
CONTEXT = {"Applicant": {"Age": 35, "Monthly Income": 4200, "Credit Score": 720, "Employment": "Employed"},
           "Loan": {"Amount": 15000, "Annual Rate": 0.06, "Term": 36}}
BROKEN = """<?xml version="1.0"?>
<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" id="m" name="loan prequalification" namespace="x">
  <decision name="Grade" id="d_grade">
    <informationRequirement><requiredDecision href="#d_gone"/></informationRequirement>
    <decisionTable id="t_grade" hitPolicy="SOMETIMES">
      <output id="o1" name="Grade"/>
    </decisionTable>
  </decision>
</definitions>
"""


def load_url() -> str:
    return reverse("admin:agents_ruleset_load")


def try_url(version) -> str:
    return reverse("admin:agents_rulesetversion_try", args=[version.pk])


def page_text(response) -> str:
    return html.unescape(response.content.decode())


def test_a_dmn_file_loads_as_a_version_and_its_page_shows_the_decisions_and_tables(admin_client):
    upload = SimpleUploadedFile("loan_prequalification.dmn", EXPORT.read_bytes(), content_type="application/xml")

    response = admin_client.post(load_url(), {"upload": upload, "activate": "on"}, follow=True)

    version = RuleSetVersion.objects.get(ruleset__name="loan-prequalification")
    assert version.status == "active"
    assert response.redirect_chain[-1][0] == reverse("admin:agents_rulesetversion_change", args=[version.pk])
    page = page_text(response)
    assert "Rules (0)" not in page and "loan prequalification" in page
    assert "Decision Risk Category (tRiskCategory)" in page and "Decision Pre-qualification (string)" in page
    assert "Hit policy UNIQUE; 5 rules." in page and "Hit policy FIRST; 6 rules." in page
    assert 'data-rule="_F5E03B26-1F0A-4B9C-7D6E-5F4A3B2C1D0E"' in page  # the "Approved" rule, with its entries
    assert "<code>]0.3..0.45]</code>" in page and "low risk, stretched" in page
    assert "Installment calculation(Loan.Amount, Loan.Annual Rate, Loan.Term)" in page  # the BKM's invocation
    assert "Amount: number, Rate: number, Term: number" in page
    listed = page_text(admin_client.get(reverse("admin:agents_rulesetversion_changelist")))
    assert "3 DMN decisions" in listed


def test_a_broken_model_shows_each_problem_in_the_form_naming_the_element_and_stores_nothing(admin_client):
    response = admin_client.post(load_url(), {"source": BROKEN})

    errors = response.context["form"].errors["source"]
    assert "decision 'Grade' (id d_grade): requiredDecision refers to '#d_gone', which is not in the model" in errors
    assert any(error.startswith("decision 'Grade' (id d_grade): decision table: hit policy 'SOMETIMES'")
               for error in errors)
    assert f"The definition has {len(errors)} problems" in page_text(response)
    assert not RuleSetVersion.objects.exists()


def test_loading_needs_the_text_or_a_file_not_both_nor_neither(admin_client):
    both = admin_client.post(load_url(), {"source": EXPORT.read_text(),
                                          "upload": SimpleUploadedFile("m.dmn", EXPORT.read_bytes())})
    neither = admin_client.post(load_url(), {"source": "  "})
    binary = admin_client.post(load_url(), {"upload": SimpleUploadedFile("m.dmn", b"\xff\xfe<definitions")})

    assert both.context["form"].errors == {"upload": ["Give the definition as text or as a file, not both."]}
    assert neither.context["form"].errors == {"source": ["Give the definition: paste its text or choose a file."]}
    assert binary.context["form"].errors == {"upload": ["m.dmn is not UTF-8 text"]}
    assert not RuleSetVersion.objects.exists()


def test_try_offers_the_top_decision_and_a_context_with_the_input_data(admin_client):
    version, _ = services.rules_load(text=EXPORT.read_text())

    response = admin_client.get(try_url(version))

    form = response.context["form"]
    assert form.initial["decision"] == "Pre-qualification"
    assert [choice for choice, _ in form.fields["decision"].choices] == [
        "Monthly Installment", "Risk Category", "Pre-qualification", "Installment calculation"]  # and the BKM
    assert json.loads(form.initial["context"]) == {
        "Applicant": {"Age": None, "Credit Score": None, "Employment": None, "Monthly Income": None},
        "Loan": {"Amount": None, "Annual Rate": None, "Term": None}}


def test_try_evaluates_the_chosen_decision_and_shows_the_trace_without_auditing(admin_client):
    version, _ = services.rules_load(text=EXPORT.read_text())

    response = admin_client.post(try_url(version), {"decision": "Pre-qualification", "context": json.dumps(CONTEXT)})

    page = page_text(response)
    result = response.context["result"]
    assert result["decision"] == '"Approved"' and result["errors"] == []
    assert [entry["decision"] for entry in result["trace"]] == ["Risk Category", "Monthly Installment",
                                                               "Pre-qualification"]
    assert "Trace (3 decisions evaluated)" in page
    assert 'rule 5 [>= 700; "Employed", "Self-employed"]' in page and 'rule 6 [-; "Low"; <= 0.3]' in page
    assert "Monthly Installment / Applicant.Monthly Income</code> = <code>0.10865" in page
    assert not Decision.objects.exists()


def test_try_shows_the_model_errors_and_refuses_an_unknown_decision(admin_client):
    version, _ = services.rules_load(text=EXPORT.read_text())
    retired = {**CONTEXT, "Applicant": {**CONTEXT["Applicant"], "Employment": "Retired"}}

    answered = admin_client.post(try_url(version), {"decision": "Risk Category", "context": json.dumps(retired)})
    unknown = admin_client.post(try_url(version), {"decision": "Price", "context": "{}"})

    assert answered.context["result"]["decision"] == "null"
    assert "input 'Applicant.Employment': 'Retired' is not an allowed value of Employment" in page_text(answered)
    assert list(unknown.context["form"].errors) == ["decision"]


def test_a_models_decision_services_are_listed_on_its_version_page(admin_client):
    from tests.decisions.test_dmn import SERVICES

    version, _ = services.rules_load(text=SERVICES, activate=True)

    page = page_text(admin_client.get(reverse("admin:agents_rulesetversion_change", args=[version.pk])))

    assert "Decision services (2)" in page
    assert ('<tr data-service="s_price"><th scope="row">Price Service</th><td>Base Price, Quantity</td>\n'
            "        <td>Total</td><td>Unit Price, Discount</td></tr>") in page
    assert '<tr data-service="s_both"><th scope="row">Both</th><td>Discount, Base Price, Quantity</td>' in page


def test_the_try_page_evaluates_a_business_knowledge_model_with_its_parameters(admin_client):
    version = services.rules_load_file(path=str(EXPORT), activate=True)[0]

    response = admin_client.post(try_url(version), {"decision": "Installment calculation",
                                                    "context": json.dumps({"Amount": 12000, "Rate": 0.06, "Term": 12})})

    result = response.context["result"]
    assert result["errors"] == [] and float(result["decision"]) == pytest.approx(1032.80, abs=0.01)
