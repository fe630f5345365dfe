"""Generated stubs of the kubelet PodResources v1 API (``tools/gen_podresources.py``; do not edit)."""
