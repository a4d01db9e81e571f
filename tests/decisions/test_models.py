"""The ML fallback: train from CSV or the audit, load safely by checksum, abstain when unsure."""
import csv
import io
import random
import re
import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection

from agents.decisions import services
from agents.exceptions import ModelError
from agents.models import Decision, DecisionModelVersion, ShadowComparison
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


def test_a_version_loaded_after_training_sets_the_threshold_the_model_abstains_below(tmp_path):
    # the model kept the threshold of the version it was trained under
    load(WITH_MODEL.replace("ABSTAIN", "0.5"))
    services.model_train(ruleset="credit", csv_path=write_training_csv(tmp_path / "train.csv"))
    context = {"income": 50_000, "employment": "employed"}
    assert services.decide(ruleset="credit", context=context, use_cache=False)["engine"] == "model"

    load(WITH_MODEL.replace("ABSTAIN", "0.9999"))
    result = services.decide(ruleset="credit", context=context, use_cache=False)

    assert (result["engine"], result["decision"], result["needs_review"]) == ("default", "manual_review", True)
    assert "< 0.9999), so the default applies" in result["reasoning"]


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


def swapped_features(text: str) -> str:
    """The rule set with its two model features declared in the other order (the same number of columns)."""
    income = "        - {name: income, type: number}\n"
    employment = "        - {name: employment, type: category, values: [employed, unemployed]}\n"
    assert income + employment in text
    return text.replace(income + employment, employment + income)


def test_models_read_the_features_they_were_trained_on_whatever_a_new_version_declares(tmp_path):
    # given a champion and a challenger trained on [income, employment], then a version declaring them swapped
    load(WITH_MODEL.replace("ABSTAIN", "0.6"))
    data = write_training_csv(tmp_path / "train.csv")
    services.model_train(ruleset="credit", csv_path=data)
    services.model_train(ruleset="credit", csv_path=data)
    load(swapped_features(WITH_MODEL.replace("ABSTAIN", "0.6")))

    # when a rich, employed applicant is decided by the model and compared in shadow with the challenger
    rich = services.decide(ruleset="credit", context={"income": 95_000, "employment": "employed"})
    poor = services.decide(ruleset="credit", context={"income": 1_000, "employment": "unemployed"})
    services.decisions_shadow_evaluate(decision_ids=[rich["decision_id"], poor["decision_id"]])

    # then both models answer as they were trained to, not from the new order of the columns
    assert (rich["engine"], rich["decision"], rich["ruleset_version"]) == ("model", "approve", 2)
    assert (poor["engine"], poor["decision"]) == ("model", "reject")
    compared = ShadowComparison.objects.filter(candidate="model v2 (challenger)")
    assert sorted(compared.values_list("candidate_decision", "agrees")) == [("approve", True), ("reject", True)]


def test_an_unusable_challenger_is_left_out_of_the_shadow_comparison_not_the_batch(tmp_path, model_dir):
    # given a champion, a challenger whose file is gone, and a shadow draft
    load(WITH_MODEL.replace("ABSTAIN", "0.6"))
    data = write_training_csv(tmp_path / "train.csv")
    services.model_train(ruleset="credit", csv_path=data)
    challenger = services.model_train(ruleset="credit", csv_path=data)
    (model_dir / challenger.path).unlink()
    load(WITH_MODEL.replace("ABSTAIN", "0.6").replace("priority: 10}", "priority: 10}\n  "
         "    - {id: rich, condition: \"income > 90000\", decision: approve}"), activate=False, shadow=True)
    ids = [services.decide(ruleset="credit", context={"income": income, "employment": "employed"})["decision_id"]
           for income in (95_000, 1_000)]

    # when the shadow task compares the batch
    recorded = services.decisions_shadow_evaluate(decision_ids=ids)

    # then the draft is compared for every decision, and the challenger for none
    assert recorded == 2
    assert sorted(ShadowComparison.objects.values_list("candidate", "candidate_decision")) == [
        ("version 2", "approve"), ("version 2", "manual_review")]


MASKED_INCOME = """
    name: income-rules
    hit_policy: first
    default: {decision: manual_review, confidence: 0.0}
    mask: [income]
    model:
      features: [{name: income, type: number}]
    rules:
      - {id: rich, condition: "income > 50000", decision: approve}
      - {id: poor, condition: "income <= 50000", decision: reject}
"""


def test_training_from_the_audit_leaves_out_contexts_audited_while_a_feature_was_masked():
    # given 40 decisions audited while income was masked, then a version that no longer masks it
    load(MASKED_INCOME)
    incomes = [{"income": 1000 + i * 2500} for i in range(40)]
    services.decide_many(ruleset="income-rules", contexts=incomes, use_cache=False)
    load(MASKED_INCOME.replace("    mask: [income]\n", ""))

    # when a model is trained from the audit, it is refused: every audited income is ***
    with pytest.raises(ModelError, match=r"40 audited context\(s\) hold masked \(\*\*\*\) feature values.*"
                                         r"0 remain, at least 10 are needed"):
        services.model_train(ruleset="income-rules", from_audit=True)

    # and once incomes are audited in the clear, only those are learned from
    services.decide_many(ruleset="income-rules", contexts=incomes, use_cache=False)
    model = services.model_train(ruleset="income-rules", from_audit=True)
    assert model.metrics["rows"] == 40
    assert services.decide(ruleset="income-rules", context={"income": 99_000}, use_cache=False)["engine"] == "rules"
    assert services.ml.model_predict(services._load(model), {"income": 99_000}, services.ml.features_of(
        model.features))[0] == "approve"


@pytest.mark.parametrize(("spoil", "reason"), [
    (lambda path: path.write_bytes(b"tampered"), "sha256 .* expected .* refusing to load"),
    (lambda path: path.unlink(), "is missing"),
])
def test_promoting_a_model_whose_file_is_unusable_is_refused(tmp_path, model_dir, spoil, reason):
    # given a champion and a challenger whose file was changed or removed
    load(WITH_MODEL.replace("ABSTAIN", "0.6"))
    data = write_training_csv(tmp_path / "train.csv")
    services.model_train(ruleset="credit", csv_path=data)
    spoil(model_dir / services.model_train(ruleset="credit", csv_path=data).path)

    # when it is promoted, then the command fails naming why, and the champion stays
    with pytest.raises(CommandError, match=f"rule set 'credit' model v2 cannot be promoted: .*{reason}"):
        call_command("decisions", "promote", "credit", "2", stdout=io.StringIO())
    assert dict(DecisionModelVersion.objects.values_list("number", "alias")) == {1: "champion", 2: "challenger"}
    assert services.decide(ruleset="credit", context={"income": 95_000, "employment": "employed"})["engine"] == "model"


def test_training_from_a_csv_with_a_path_too_long_to_store_keeps_its_end(tmp_path, model_dir):
    # given a training CSV whose path is longer than the 500 characters a model version stores
    load(WITH_MODEL.replace("ABSTAIN", "0.6"))
    deep = tmp_path / ("a" * 200) / ("b" * 200) / ("c" * 100)
    deep.mkdir(parents=True)
    path = write_training_csv(deep / "train.csv")
    assert len(path) > 500

    # when the model is trained from it
    call_command("decisions", "train", "credit", "--csv", path, stdout=io.StringIO())

    # then the path's end is stored, and the model's one file is in place
    source = DecisionModelVersion.objects.get().training_source
    assert len(source) == 500 and source.startswith("...") and source.endswith("c" * 100 + "/train.csv")
    assert sorted(p.name for p in (model_dir / "credit").iterdir()) == ["v1.skops"]


def test_a_training_whose_row_cannot_be_saved_fails_clearly_and_leaves_no_file(tmp_path, model_dir, monkeypatch):
    # given a rule set whose next model row is taken by another training as it is saved
    load(WITH_MODEL.replace("ABSTAIN", "0.6"))

    def taken(**fields):
        raise IntegrityError('duplicate key value violates unique constraint "model_version_number_unique"')

    monkeypatch.setattr(DecisionModelVersion.objects, "create", taken)

    # when a model is trained, then the error says so, and no model file is left behind
    with pytest.raises(ModelError, match="rule set 'credit': another model was saved at the same time"):
        services.model_train(ruleset="credit", csv_path=write_training_csv(tmp_path / "train.csv"))
    monkeypatch.undo()
    assert not DecisionModelVersion.objects.exists()
    assert list((model_dir / "credit").iterdir()) == []


def write_other_csv(path):
    """A second data set, labelled the other way round, so its model differs from ``write_training_csv``'s."""
    rng = random.Random(9)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["income", "employment", "label"])
        for _ in range(200):
            income = rng.randint(0, 100_000)
            label = "approve" if income < 30_000 else "reject"
            writer.writerow([income, rng.choice(["employed", "unemployed"]), label])
    return str(path)


@pytest.mark.django_db(transaction=True)
def test_two_trainings_at_once_take_numbers_in_turn_and_keep_their_own_files(tmp_path, monkeypatch):
    # given two trainings of one rule set that both finish fitting before either saves its row
    load(WITH_MODEL.replace("ABSTAIN", "0.6"))
    sources = {"champion": write_training_csv(tmp_path / "a.csv"), "challenger": write_other_csv(tmp_path / "b.csv")}
    both_fitted = threading.Barrier(2, timeout=60)
    fit = services.ml.model_train

    def fit_together(**arguments):
        trained = fit(**arguments)
        both_fitted.wait()
        return trained

    monkeypatch.setattr(services.ml, "model_train", fit_together)
    outcomes = {}

    def train(alias):
        try:
            outcomes[alias] = services.model_train(ruleset="credit", csv_path=sources[alias], alias=alias)
        except Exception as error:  # noqa: BLE001 - the test reports what a training raised
            outcomes[alias] = error
        finally:
            connection.close()

    # when both run at the same time
    threads = [threading.Thread(target=train, args=(alias,)) for alias in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then each has its own number and file, and every model loads
    assert all(isinstance(model, DecisionModelVersion) for model in outcomes.values()), outcomes
    assert sorted(model.number for model in outcomes.values()) == [1, 2]
    assert outcomes["champion"].sha256 != outcomes["challenger"].sha256
    assert services.models_unusable() == []
    for model in DecisionModelVersion.objects.all():
        services._load(model)
