"""Reading definitions: YAML read as JSON would read it."""
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
