"""The sources room: getting objects in (a directory of manifests, or a Kubernetes API server)."""
