"""The ML fallback: train from CSV or the audit, load safely by checksum, abstain when unsure."""
import csv
import io
import random
import re

import pytest
from django.core.management import call_command

from agents.decisions import services
from agents.exceptions import ModelError
from agents.models import Decision, DecisionModelVersion
from agents.monitoring.probes import probe_run
from tests.conftest import PROJECT_DIR
from tests.decisions.conftest import load

pytestmark = pytest.mark.django_db

WITH_MODEL = """
    name: credit
    hit_policy: first
    default: {decision: manual_review, confidence: 0.0}
    model:
      features:
        - {name: income, type: number}
        - {name: employment, type: category, values: [employed, unemployed]}
      abstain_below: ABSTAIN
    rules:
      - {id: vip, condition: "vip == True", decision: approve, priority: 10}
"""


@pytest.fixture(autouse=True)
def model_dir(settings, tmp_path):
    settings.AGENTS_MODEL_DIR = tmp_path / "models"
    return settings.AGENTS_MODEL_DIR


def write_training_csv(path, rows=80):
    rng = random.Random(3)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["income", "employment", "label"])
        for _ in range(rows):
            income = rng.randint(0, 100_000)
            employed = rng.random() < 0.5
            label = "approve" if income > 50_000 and employed else "reject"
            writer.writerow([income, "employed" if employed else "unemployed", label])
    return str(path)


def test_train_from_csv_makes_a_checksummed_champion(tmp_path, model_dir):
    load(WITH_MODEL.replace("ABSTAIN", "0.6"))

    model = services.model_train(ruleset="credit", csv_path=write_training_csv(tmp_path / "train.csv"))

    assert (model.number, model.alias) == (1, "champion")
    assert len(model.sha256) == 64 and (model_dir / model.path).is_file()
    assert (model_dir / model.path).suffix == ".skops"
    assert sorted(model.classes) == ['"approve"', '"reject"']
    assert model.metrics["rows"] == 80 and model.metrics["holdout_accuracy"] > 0.7


def test_the_model_decides_when_no_rule_matches(tmp_path):
    load(WITH_MODEL.replace("ABSTAIN", "0.6"))
    services.model_train(ruleset="credit", csv_path=write_training_csv(tmp_path / "train.csv"))

    rich = services.decide(ruleset="credit", context={"income": 95_000, "employment": "employed"})
    ruled = services.decide(ruleset="credit", context={"vip": True})

    assert (rich["engine"], rich["decision"], rich["model_version"]) == ("model", "approve", 1)
    assert 0.6 <= rich["confidence"] <= 1.0
    assert "model v1 predicted" in rich["reasoning"]
    assert ruled["engine"] == "rules"  # rules first
    assert Decision.objects.get(decision_id=rich["decision_id"]).model_version.number == 1


def test_model_features_are_part_of_the_cache_key(tmp_path):
    load(WITH_MODEL.replace("ABSTAIN", "0.6"))
    services.model_train(ruleset="credit", csv_path=write_training_csv(tmp_path / "train.csv"))

    rich = services.decide(ruleset="credit", context={"income": 95_000, "employment": "employed"})
    poor = services.decide(ruleset="credit", context={"income": 1_000, "employment": "unemployed"})

    assert (rich["decision"], poor["decision"]) == ("approve", "reject")
    assert poor["cached"] is False  # the rules read neither field, but the model does


def test_below_the_abstain_threshold_the_default_decides_flagged_for_review(tmp_path):
    load(WITH_MODEL.replace("ABSTAIN", "0.999"))
    services.model_train(ruleset="credit", csv_path=write_training_csv(tmp_path / "train.csv"))

    result = services.decide(ruleset="credit", context={"income": 50_000, "employment": "employed"})

    assert (result["engine"], result["decision"], result["needs_review"]) == ("default", "manual_review", True)
    assert "flagged for review" in result["reasoning"]
    assert Decision.objects.get(decision_id=result["decision_id"]).needs_review


@pytest.mark.parametrize(("spoil", "reason"), [
    (lambda path: path.write_bytes(path.read_bytes() + b"tampered"), "sha256 .* expected .* refusing to load"),
    (lambda path: path.unlink(), "is missing"),
])
def test_a_tampered_or_missing_model_falls_back_to_the_default_for_review(tmp_path, model_dir, spoil, reason):
    # given a champion model whose file was changed or removed after training
    load(WITH_MODEL.replace("ABSTAIN", "0.6"))
    model = services.model_train(ruleset="credit", csv_path=write_training_csv(tmp_path / "train.csv"))
    spoil(model_dir / model.path)

    # when a decision needs the model
    result = services.decide(ruleset="credit", context={"income": 1, "employment": "employed"})

    # then the default answers, flagged for review with the reason, and the model is refused, never loaded
    assert (result["engine"], result["decision"], result["needs_review"]) == ("default", "manual_review", True)
    assert re.search(f"model v1 cannot be used \\(.*{reason}", result["reasoning"]), result["reasoning"]
    assert Decision.objects.get(decision_id=result["decision_id"]).needs_review
    with pytest.raises(ModelError, match=reason):
        services._load(DecisionModelVersion.objects.get(pk=model.pk))


def test_the_decision_models_check_names_an_unusable_model(tmp_path, model_dir):
    load(WITH_MODEL.replace("ABSTAIN", "0.6"))
    model = services.model_train(ruleset="credit", csv_path=write_training_csv(tmp_path / "train.csv"))
    healthy = probe_run("custom", {"function": "decision_models"})
    (model_dir / model.path).write_bytes(b"tampered")

    broken = probe_run("custom", {"function": "decision_models"})

    assert (healthy.value, healthy.message) == (0.0, "every decision model in use loads")
    assert broken.value == 1.0 and broken.message == (
        "1 decision model unusable: credit v1 (champion: file changed since it was saved (sha256 differs))")


def test_train_from_the_audit_learns_from_rule_decisions(settings):
    load("""
        name: audit-trained
        default: {decision: unknown}
        model: {features: [{name: x, type: number}]}
        rules:
          - {id: high, condition: "x >= 50", decision: high}
          - {id: low, condition: "x < 50", decision: low}
    """)
    services.decide_many(ruleset="audit-trained", contexts=[{"x": x} for x in range(0, 100, 3)], use_cache=False)

    model = services.model_train(ruleset="audit-trained", from_audit=True)

    assert model.training_source == "audit" and model.metrics["rows"] == 34
    assert sorted(model.classes) == ['"high"', '"low"']


def test_training_from_the_audit_refuses_masked_features():
    load("""
        name: masked-features
        default: {decision: unknown}
        mask: [salary]
        model: {features: [{name: salary, type: number}]}
        rules: [{id: r, condition: "salary > 1", decision: high}]
    """)

    with pytest.raises(ModelError, match="features salary are masked in the audit"):
        services.model_train(ruleset="masked-features", from_audit=True)


def test_a_second_model_is_a_challenger_until_promoted(tmp_path):
    load(WITH_MODEL.replace("ABSTAIN", "0.6"))
    data = write_training_csv(tmp_path / "train.csv")
    services.model_train(ruleset="credit", csv_path=data)
    second = services.model_train(ruleset="credit", csv_path=data)
    assert second.alias == "challenger"

    services.model_promote(ruleset="credit", number=2)

    assert dict(DecisionModelVersion.objects.values_list("number", "alias")) == {1: "", 2: "champion"}


def test_training_refuses_bad_input_with_reasons(tmp_path):
    load(WITH_MODEL.replace("ABSTAIN", "0.6"))
    no_label = tmp_path / "no_label.csv"
    no_label.write_text("income,employment\n1,employed\n")
    few = tmp_path / "few.csv"
    few.write_text("income,employment,label\n1,employed,approve\n2,employed,reject\n")
    load("name: plain\ndefault: {decision: x}\nrules: [{id: r, condition: 'True', decision: y}]")

    with pytest.raises(ModelError, match="needs a 'label' column"):
        services.model_train(ruleset="credit", csv_path=str(no_label))
    with pytest.raises(ModelError, match="at least 10 are needed"):
        services.model_train(ruleset="credit", csv_path=str(few))
    with pytest.raises(ModelError, match="declares no model features"):
        services.model_train(ruleset="plain", from_audit=True)
    assert not DecisionModelVersion.objects.exists()


GOOD_ROWS = "".join(f"{income},employed,{'approve' if income > 10 else 'reject'}\n" for income in range(20))


@pytest.mark.parametrize(("content", "reason"), [
    (bytes(range(256)) * 4, r"bad\.csv: not UTF-8 text \(save it as UTF-8 CSV\)"),
    ("income,label\n" + "".join(f"{i},approve\n" for i in range(20)),
     r"bad\.csv: no column for the model's feature\(s\) employment"),
    ("income,employment,label\n1,employed," + "x" * 200_000 + "\n" + GOOD_ROWS,
     r"bad\.csv: a field is longer than the CSV reader's limit of 131,072 characters"),
    ("income,employment,label\n" + GOOD_ROWS + "1\n", r"bad\.csv, line 22: 1 fields, the header has 3"),
    ("income,employment,label\n1,employed,approve,extra\n" + GOOD_ROWS,
     r"bad\.csv, line 2: 4 fields, the header has 3"),
    ("income,employment,label\n1,empl\x00oyed,approve\n" + GOOD_ROWS, r"bad\.csv, line 2: holds a NUL character"),
    ("income,employment,label\n" + GOOD_ROWS + "1,employed,\n", r"bad\.csv, line 22: the label is empty"),
    ("income,employment,label\ninf,employed,approve\n" + GOOD_ROWS, r"line 2: income 'inf' is not a finite number"),
    ("income,employment,label\nnan,employed,approve\n" + GOOD_ROWS, r"line 2: income 'nan' is not a finite number"),
])
def test_training_refuses_a_csv_it_cannot_read_naming_the_line(tmp_path, model_dir, content, reason):
    # given a rule set with model features and a CSV that is not a table of labelled rows
    load(WITH_MODEL.replace("ABSTAIN", "0.6"))
    path = tmp_path / "bad.csv"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)

    # when the model is trained from it, then the file and (where there is one) the line are named
    with pytest.raises(ModelError, match=reason):
        services.model_train(ruleset="credit", csv_path=str(path))
    assert not DecisionModelVersion.objects.exists() and not model_dir.exists()


def test_training_a_model_for_a_dmn_model_says_it_is_one():
    call_command("rules", "load", str(PROJECT_DIR / "examples" / "rules" / "loan_eligibility.dmn"), "--activate",
                 stdout=io.StringIO())

    for source in ({"from_audit": True}, {"csv_path": "train.csv"}):
        with pytest.raises(ModelError, match="rule set 'loan-eligibility' is a DMN model: a fallback model is "
                                             "trained for a rule set of rules"):
            services.model_train(ruleset="loan-eligibility", **source)
    assert not DecisionModelVersion.objects.exists()


def test_training_reads_a_csv_with_a_byte_order_mark_and_keeps_a_nan_label_as_text(tmp_path):
    # given a CSV as Excel saves it (UTF-8 with a byte order mark), with "NaN" among the labels
    load(WITH_MODEL.replace("ABSTAIN", "0.6"))
    path = tmp_path / "excel.csv"
    rows = "".join(f"{income * 1000},employed,{'NaN' if income >= 10 else 'reject'}\n" for income in range(20))
    path.write_bytes(("income,employment,label\n" + rows).encode("utf-8-sig"))

    # when a model is trained from it
    model = services.model_train(ruleset="credit", csv_path=str(path))

    # then the first column is read as income (the model tells high from low), and NaN is a class of its own, as text
    assert sorted(model.classes) == ['"NaN"', '"reject"']
    high = services.decide(ruleset="credit", context={"income": 19_000, "employment": "employed"})
    low = services.decide(ruleset="credit", context={"income": 0, "employment": "employed"})
    assert (high["engine"], high["decision"], low["engine"], low["decision"]) == ("model", "NaN", "model", "reject")


def test_a_label_beyond_a_double_is_kept_as_text(tmp_path):
    load(WITH_MODEL.replace("ABSTAIN", "0.6"))
    path = tmp_path / "huge.csv"
    rows = "".join(f"{income * 1000},employed,{'1e999' if income >= 10 else 'reject'}\n" for income in range(20))
    path.write_text("income,employment,label\n" + rows)

    model = services.model_train(ruleset="credit", csv_path=str(path))
    high = services.decide(ruleset="credit", context={"income": 19_000, "employment": "employed"})

    assert sorted(model.classes) == ['"1e999"', '"reject"']
    assert (high["engine"], high["decision"]) == ("model", "1e999")
