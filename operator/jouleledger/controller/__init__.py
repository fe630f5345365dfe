"""The operator (kopf): scrapes the agents, keeps the authoritative ledger, annotates finished Jobs."""
