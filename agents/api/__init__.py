"""JSON API of agentsite."""
