#!/usr/bin/env python
"""Django's command-line utility for agentsite."""
import os
import sys


def main():
    """Run administrative tasks."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentsite.settings")
    from django.core.management import execute_from_command_line

    from agents.core.audit import actor, cli_actor
    from agents.core.tracing import trace  # after DJANGO_SETTINGS_MODULE: every command is an entry point

    # A command is an operator's action: what it changes is audited as ``cli:<OS user>``.
    with trace(), actor(cli_actor()):
        execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
