"""The only code that talks to the Kubernetes API or the kubelet."""

from typing import Final

__all__ = ["KUBELET_SOCKET"]

KUBELET_SOCKET: Final = "unix:///var/lib/kubelet/pod-resources/kubelet.sock"
"""The kubelet's PodResources gRPC socket (the chart mounts its directory, ``agent.podResourcesPath``)."""
