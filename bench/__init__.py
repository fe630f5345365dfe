"""Benchmarks that print figures (run as modules from the repository root, e.g. ``python -m bench.agent_tick``)."""
