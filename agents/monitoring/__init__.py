"""Monitoring agents: scheduled checks, metrics, alerts that are raised, deduplicated, notified and resolved, and
incident responses.

The face other code may use: ``services`` (load definitions, dispatch and run checks), ``alerts`` (acknowledge,
silence, resolve), ``selectors`` (checks, alerts, metrics as JSON), ``rules``, ``probes`` and ``notifiers``
(validate matchers, check types and notifier configs), ``alertmanager`` (Alertmanager's formats),
``exposition`` (the Prometheus exposition read at scrape time) and ``watchdog`` (beat's own watch, a route's
heartbeat option). ``actions`` registers ``monitoring.check`` and the
monitoring agent's task kind.
"""
__all__ = ["services", "alerts", "selectors", "rules", "probes", "notifiers", "alertmanager", "exposition", "watchdog"]
