#!/usr/bin/env python
"""Django's command-line utility for agentsite."""
import gc
import os
import sys


def main():
    """Run administrative tasks."""
    # Start-up only makes objects that live as long as the process: no collection until the agents app's ready()
    # freezes them and turns it back on (Django's start-up ran collections over a growing heap for about 0.05 s).
    gc.disable()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentsite.settings")
    from django.core.management import execute_from_command_line

    from agents.core.audit import actor, cli_actor
    from agents.core.tracing import trace  # after DJANGO_SETTINGS_MODULE: every command is an entry point

    # A command is an operator's action: what it changes is audited as ``cli:<OS user>``.
    try:
        with trace(), actor(cli_actor()):
            execute_from_command_line(sys.argv)
    finally:
        # The interpreter's exit runs full collections over everything the command loaded (pandas and the rest:
        # 0.25 s after a data run); the process is ending, so nothing is left for them to find that matters.
        gc.freeze()


if __name__ == "__main__":
    main()
