"""The kernel every area builds on, importing none of them: parameter schemas, registries, guarded transitions,
task dispatch by name, events, definition text and JSON helpers, and the infrastructure every area calls
(circuit breakers, tracing, encryption, network allow-lists, the audit log)."""
