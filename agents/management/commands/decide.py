"""``manage.py decide NAME --context JSON`` (or ``--contexts FILE.jsonl``): make decisions, audited.

For a DMN model, ``--decision NAME`` names the decision to evaluate; the trace shows every decision evaluated."""
import json
from pathlib import Path

from django.core.management.base import CommandError

from agents.core.batchwork import collector_paused
from agents.decisions import services
from agents.management.base import AgentsCommand, json_text


#: JSON lines written at a time by --contexts.
OUTPUT_LINES = 100


class Command(AgentsCommand):
    """Decide with the active version of a rule set."""

    help = "Decide for one context (--context JSON) or a batch (--contexts FILE.jsonl: one JSON line out per line in)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="The rule set.")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--context", help="One context as a JSON object.")
        source.add_argument("--contexts", metavar="FILE", help="A JSON-lines file of contexts.")
        self.json_argument_add(parser, help="Print the whole answer as JSON (always for --contexts).")
        parser.add_argument("--no-cache", action="store_true", help="Evaluate even when a cached answer exists.")
        parser.add_argument("--decision", help="For a DMN model: the decision to evaluate (its required decisions first).")
        parser.add_argument("--trace", action="store_true",
                            help="With --contexts: each answer with its trace (every rule evaluated, matched or not; "
                                 "a DMN model's decisions); without it the lines leave it out.")

    def handle(self, *args, name, context, contexts, json: bool, no_cache: bool, decision=None, trace=False,
               **options):
        if contexts:
            self._batch(name, contexts, use_cache=not no_cache, decision=decision, trace=trace)
            return
        if trace:
            raise CommandError("--trace is for --contexts: one --context with --json always shows its trace")
        if decision is not None:
            self._dmn(name, decision, _parse(context, "--context"), as_json=json)
            return
        result = services.decide(ruleset=name, context=_parse(context, "--context"), use_cache=not no_cache)
        if json:
            self.json_write(result)
            return
        self.stdout.write(f"decision: {json_text(result['decision'])}  (confidence {result['confidence']}, "
                          f"engine {result['engine']})")
        self.stdout.write(f"why: {result['reasoning']}")
        self.stdout.write(f"rules: {', '.join(result['rule_ids']) or 'none'}; rule set {result['ruleset']} "
                          f"v{result['ruleset_version']}; decision {result['decision_id']}")

    def _dmn(self, name: str, decision: str, context: dict, *, as_json: bool) -> None:
        result = services.decide(ruleset=name, decision=decision, context=context)
        if as_json:
            self.json_write(result)
            return
        self.stdout.write(f"{decision}: {json_text(result['decision'])}  (rule set {result['ruleset']} "
                          f"v{result['ruleset_version']}; decision {result['decision_id']})")
        for entry in result["trace"]:
            self.stdout.write(f"  decision {entry['decision']!r} ({entry['kind']}) = {json_text(entry['result'])}"
                              f"; inputs {json_text(entry['inputs'])}")
            for table in entry["tables"]:
                reads = ", ".join(f"{read['expression']} = {json_text(read['value'])}" for read in table["inputs"])
                rules = ", ".join(f"{match['rule']} [{'; '.join(match['entries'])}]" for match in table["matched"])
                self.stdout.write(f"    table {table['hit_policy']}: {reads}; matched rules: {rules or 'none'}")
        for error in result["errors"]:
            self.stdout.write(f"  error: {error}")

    def _batch(self, name: str, path: str, *, use_cache: bool, decision: str | None, trace: bool) -> None:
        try:
            lines = Path(path).read_text(encoding="utf-8-sig").splitlines()  # UTF-8, a byte-order mark or not
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"{path}: cannot read: {getattr(error, 'strerror', None) or error}") from None
        # The parsed contexts and the answers are many small objects and no cycles: see ``agents.core.batchwork``.
        with collector_paused():
            parsed = [_parse(line, f"{path}, line {number}")
                      for number, line in enumerate(lines, start=1) if line.strip()]
            answers = services.decide_many_json(ruleset=name, contexts=parsed, use_cache=use_cache,
                                                decision=decision, trace=trace)
            # Each write is far larger than a pipe holds: a reader that stops (`| head -1`) makes the next one fail.
            for start in range(0, len(answers), OUTPUT_LINES):
                self.stdout.write("\n".join(answers[start:start + OUTPUT_LINES]))


def _parse(text: str, where: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise CommandError(f"{where}: not valid JSON: {error}") from None
    except RecursionError:
        raise CommandError(f"{where}: not valid JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise CommandError(f"{where}: a context must be a JSON object, got {type(value).__name__}")
    return value
