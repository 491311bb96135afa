"""Kubernetes mode: talking to the API server (api.py), status (status.py computes, status_writer.py
writes), leader election for the status writer (leader.py). The source that lists and watches the
resources is sources/kubernetes.py."""
