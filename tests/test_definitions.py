"""Reading definitions: YAML read as JSON would read it."""
import re

from agents.core.definitions import definition_load_text


def test_only_true_and_false_are_booleans_so_on_yes_and_no_stay_text():
    document = definition_load_text("on: customer_id\nanswer: yes\nswitch: off\nenabled: true\nshadow: False\n")
    assert document == {"on": "customer_id", "answer": "yes", "switch": "off", "enabled": True, "shadow": False}


def test_dates_stay_text():
    assert definition_load_text("since: 2024-01-01\n") == {"since": "2024-01-01"}


def test_nan_and_infinity_are_refused_whatever_the_definition():
    import pytest

    from agents.core.definitions import DefinitionTextError

    for text in ("threshold: .nan\n", "limit: -.inf\n", '{"x": .inf}'):
        with pytest.raises(DefinitionTextError, match="is not a number JSON allows"):
            definition_load_text(text)


def test_a_key_given_twice_in_one_mapping_is_refused_naming_both_lines():
    import pytest

    from agents.core.definitions import DefinitionTextError

    cases = [
        ("rules:\n  - id: a\n    condition: amount > 1\n    condition: 'True'\n",
         "at line 4, column 5: the key 'condition' is given twice in one mapping (first at line 3)"),
        ('{"name": "x", "rules": [{"id": "a", "decision": "y", "decision": "z"}]}',
         "at line 1, column 54: the key 'decision' is given twice in one mapping (first at line 1)"),
        ("on: a\n'on': b\n", "at line 2, column 1: the key 'on' is given twice in one mapping (first at line 1)"),
    ]
    for text, reason in cases:
        with pytest.raises(DefinitionTextError, match="definition: not valid YAML or JSON " + re.escape(reason)):
            definition_load_text(text)


def test_a_key_a_merge_brings_in_may_be_overridden_and_the_same_key_in_two_mappings_is_fine():
    assert definition_load_text("base: &b {a: 1, b: 2}\nrules:\n  - <<: *b\n    a: 3\n") == {
        "base": {"a": 1, "b": 2}, "rules": [{"a": 3, "b": 2}]}
    assert definition_load_text('{"a": {"b": 1}, "c": {"b": 2}}') == {"a": {"b": 1}, "c": {"b": 2}}
    # a mapping that merges another and overrides its key, itself merged into a later one
    assert definition_load_text("a: &a {k: 1}\nx: {y: &b {<<: *a, k: 3}}\nother: {<<: *b}\n") == {
        "a": {"k": 1}, "x": {"y": {"k": 3}}, "other": {"k": 3}}


def test_a_key_that_is_not_text_is_refused_naming_it_wherever_it_is():
    import pytest

    from agents.core.definitions import DefinitionTextError

    # JSON (and so the database) keeps keys as text: 1 and "1" would become one key, and mixed keys cannot be sorted
    for text, key in (("params: {1: one, region: eu}\n", "1"), ("steps: [{params: {value: {null: a}}}]\n", "None"),
                      ("rules: {true: x}\n", "True"), ("limits: {1.5: x}\n", "1.5")):
        with pytest.raises(DefinitionTextError) as raised:
            definition_load_text(text, source="flow.yaml")
        assert str(raised.value) == (f"flow.yaml: key {key} is not text; quote it (YAML reads an unquoted number, "
                                     "null, true or false as that value)")
    assert definition_load_text("params: {'1': one, region: eu}\n") == {"params": {"1": "one", "region": "eu"}}
