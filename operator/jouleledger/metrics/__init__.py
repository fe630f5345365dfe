"""The only package that imports ``prometheus_client``: exposition for the agent and the operator."""
