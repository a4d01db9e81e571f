"""The DMN TCK compliance-level-2 cases (``dmn_tck/level-2``, copied from the shared conformance suite): each model is
loaded through the rules load service and every test case's decisions are evaluated through the decide service."""
import xml.etree.ElementTree as ElementTree
from decimal import Decimal
from pathlib import Path

import pytest

from agents.decisions import services

pytestmark = pytest.mark.django_db

CASES = sorted(path for path in (Path(__file__).parent / "dmn_tck" / "level-2").iterdir() if path.is_dir())
XSI = "{http://www.w3.org/2001/XMLSchema-instance}"
#: Numbers agree when they differ by less than this, relatively: the TCK's expected values were computed by
#: implementations in binary floating point (e.g. 562.707359373292 where the exact value is 562.70735937326593...).
RELATIVE_TOLERANCE = Decimal("1e-12")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element, name: str) -> list:
    return [child for child in element if _local(child.tag) == name]


def tck_value(element):
    """The value an ``inputNode``, ``expected``, ``component`` or list ``item`` holds, as a Python value."""
    for value in _children(element, "value"):
        if value.get(XSI + "nil") == "true":
            return None
        kind, text = value.get(XSI + "type", ""), value.text or ""
        if kind.split(":")[-1] in ("decimal", "double", "integer", "int", "long"):
            return Decimal(text.strip())
        if kind.endswith("boolean"):
            return text.strip() == "true"
        return text
    for listed in _children(element, "list"):
        return [tck_value(item) for item in _children(listed, "item")]
    components = _children(element, "component")
    if components:
        return {component.get("name"): tck_value(component) for component in components}
    return None


def as_json(value):
    """A TCK value as the JSON a caller sends: decimals as numbers."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: as_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_json(item) for item in value]
    return value


def same(expected, actual) -> bool:
    """Whether a decision's JSON result is the TCK's expected value (numbers within ``RELATIVE_TOLERANCE``)."""
    if isinstance(expected, Decimal):
        if isinstance(actual, bool) or not isinstance(actual, (int, float)):
            return False
        difference = abs(Decimal(repr(actual)) - expected)
        return difference <= RELATIVE_TOLERANCE * max(abs(expected), Decimal(1))
    if isinstance(expected, dict):
        return isinstance(actual, dict) and set(expected) == set(actual) and all(
            same(expected[key], actual[key]) for key in expected)
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(
            same(item, other) for item, other in zip(expected, actual))
    return type(expected) is type(actual) and expected == actual


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_tck_level_2_case(case):
    (model_path,) = case.glob("*.dmn")
    (tests_path,) = case.glob("*-test-01.xml")
    version, _ = services.rules_load_file(path=str(model_path), activate=True)
    failures, checked = [], 0

    for test_case in _children(ElementTree.parse(tests_path).getroot(), "testCase"):
        context = {node.get("name"): as_json(tck_value(node)) for node in _children(test_case, "inputNode")}
        for result_node in _children(test_case, "resultNode"):
            (expected_element,) = _children(result_node, "expected")
            expected = tck_value(expected_element)
            answer = services.decide(ruleset=version.ruleset.name, decision=result_node.get("name"), context=context)
            checked += 1
            if not same(expected, answer["decision"]):
                failures.append(f"test {test_case.get('id')} {result_node.get('name')}: expected {as_json(expected)!r}, "
                                f"got {answer['decision']!r} {answer['errors']}")

    assert checked and not failures, "\n".join(failures)
