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


def test_a_value_a_yaml_tag_makes_that_json_cannot_hold_is_refused_naming_where_and_what_to_write():
    import pytest

    from agents.core.definitions import DefinitionTextError

    # json.dumps raised on these past the loader (a content hash, a stored definition: a 500)
    binary = "a !!binary value is not JSON; write the text instead"
    a_set = "a !!set value is not JSON; write a list instead"
    timestamp = ("a !!timestamp value is not JSON; write the date or time as text instead (without the tag a date "
                 "stays text)")
    entry = "an !!omap or !!pairs entry is not JSON; write a mapping, or a list of [key, value] lists, instead"
    for text, where, reason in (
        ("name: y5\nsteps:\n  - id: a\n    action: echo\n    params: {value: !!binary aGVsbG8=}\n",
         "steps[0].params.value", binary),
        ("params: {x: !!set {a, b}}\n", "params.x", a_set),
        ("since: !!timestamp 0001-01-01\n", "since", timestamp),
        ("at: [1, {when: !!timestamp '2001-12-14t21:59:43.10-05:00'}]\n", "at[1].when", timestamp),
        ("order: !!omap [a: 1]\n", "order[0]", entry),
        ("pairs: !!pairs [a: 1]\n", "pairs[0]", entry),
        ("x: !<tag:yaml.org,2002:binary> aGk=\n", "x", binary),  # the tag in full, or through a %TAG handle
        ("%TAG !y! tag:yaml.org,2002:\n---\nx: !y!set {a}\n", "x", a_set),
        ("a: &a !!set {q}\nb: [*a]\n", "b[0]", a_set),  # where an alias repeats it, too
    ):
        with pytest.raises(DefinitionTextError) as raised:
            definition_load_text(text, source="flow.yaml")
        assert str(raised.value) == f"flow.yaml: {where}: {reason}"
    with pytest.raises(DefinitionTextError) as raised:
        definition_load_text("!!binary aGk=\n")
    assert str(raised.value) == f"definition: {binary}"
    # the same values without their tags are text, as JSON would have them; JSON text is read as before
    assert definition_load_text("since: 0001-01-01\nvalue: aGVsbG8=\nat: 2001-12-14t21:59:43.10-05:00\n") == {
        "since": "0001-01-01", "value": "aGVsbG8=", "at": "2001-12-14t21:59:43.10-05:00"}
    assert definition_load_text('{"a": [1, 2.5, "x", null, true, {"since": "2024-01-02", "b": "aGk="}]}') == {
        "a": [1, 2.5, "x", None, True, {"since": "2024-01-02", "b": "aGk="}]}


def test_python_and_unknown_tags_are_refused_by_the_safe_loader():
    import pytest

    from agents.core.definitions import DefinitionTextError

    for text, tag in (("x: !!python/tuple [1]\n", "tag:yaml.org,2002:python/tuple"),
                      ("x: !!python/object/apply:os.system [ls]\n", "tag:yaml.org,2002:python/object/apply:os.system"),
                      ("x: !custom a\n", "!custom")):
        with pytest.raises(DefinitionTextError, match=re.escape(
                f"at line 1, column 4: could not determine a constructor for the tag '{tag}'")):
            definition_load_text(text)


def test_a_tagged_scalar_its_tag_cannot_read_is_refused_naming_its_line():
    import pytest

    from agents.core.definitions import DefinitionTextError

    # the constructors raised ValueError, KeyError or AttributeError past the loader (a 500)
    digits = "1" * 5000
    for text, reason in (
        ("x: !!bool maybe\n", "at line 1, column 4: 'maybe' is not a valid !!bool"),
        ("x: !!timestamp nope\n", "at line 1, column 4: 'nope' is not a valid !!timestamp"),
        ("a: 1\nx: !!timestamp 2024-13-45\n",
         "at line 2, column 4: '2024-13-45' is not a valid !!timestamp (month must be in 1..12)"),
        ("x: !!int abc\n", "at line 1, column 4: 'abc' is not a valid !!int (invalid literal for int() with base 10"),
        ("x: !!float abc\n", "at line 1, column 4: 'abc' is not a valid !!float (could not convert string to float"),
        (f"x: {digits}\n", f"at line 1, column 4: '{'1' * 40}...' is not a valid !!int (Exceeds the limit (4300 "
                           "digits) for integer string conversion: value has 5000 digits)"),
        (f'{{"x": {digits}}}', f"at line 1, column 7: '{'1' * 40}...' is not a valid !!int (Exceeds the limit"),
    ):
        with pytest.raises(DefinitionTextError, match="^definition: not valid YAML or JSON " + re.escape(reason)):
            definition_load_text(text)


def test_merges_of_merges_are_refused_before_they_make_millions_of_keys():
    import pytest

    from agents.core.definitions import MAX_DEFINITION_VALUES, DefinitionTextError

    # 500 bytes: each level merges nine copies of the one before (9**8 keys; it took minutes and gigabytes)
    lines = ["a0: &a0 {k: 1}"] + [f"a{i}: &a{i} {{<<: [{', '.join([f'*a{i - 1}'] * 9)}]}}" for i in range(1, 9)]

    with pytest.raises(DefinitionTextError, match=f"<< merges bring in more than {MAX_DEFINITION_VALUES} keys in all"):
        definition_load_text("\n".join(lines))


def test_ordinary_merges_still_bring_their_keys_in():
    text = "defaults: &d {retries: 2, timeout_s: 30}\nstep: {<<: *d, timeout_s: 5}\nother: {<<: [*d], id: x}\n"

    assert definition_load_text(text) == {"defaults": {"retries": 2, "timeout_s": 30},
                                          "step": {"retries": 2, "timeout_s": 5},
                                          "other": {"retries": 2, "timeout_s": 30, "id": "x"}}
