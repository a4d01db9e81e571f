"""Decision agents: versioned rule sets (safe expressions, decision tables, JsonLogic) with an ML fallback, every
decision audited.

The face other code may use: ``services`` (load, activate, decide, train), ``selectors`` (rule sets and decisions
as JSON) and ``ruleset`` (pure: parse and evaluate a rule set). ``dmn`` (pure) reads and evaluates DMN models, which
the services store and decide with like rule sets. ``actions`` registers ``decision.evaluate`` and the
decision agent's task kind. ``cache`` and ``ml`` are the area's own.
"""
__all__ = ["services", "selectors", "ruleset"]
