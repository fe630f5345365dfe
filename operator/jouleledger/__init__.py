"""Joule Ledger: measured GPU energy, carbon and cost per pod, job, namespace and team on Kubernetes.

The package is split into a pure core (``jouleledger.core``: stdlib only, no I/O, no clocks) and thin adapters
around it, one per outside system (``hardware`` for NVML, ``kube`` for the kubelet and the Kubernetes API,
``metrics`` for Prometheus, ``intensity`` for grid carbon-intensity providers). Importing any module does no work.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
