"""An operator's extension module: a custom check registered by name (imported via AGENTS_EXTENSION_MODULES)."""
from agents.monitoring.probes import check_function


@check_function("answer")
def answer(args: dict) -> tuple[float, str]:
    """Always 42, in the unit the check asks for."""
    return 42.0, args.get("unit", "things")
