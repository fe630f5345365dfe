"""The per-node agent (DaemonSet): measures, attributes, counts, checkpoints and exposes ``/metrics``."""
