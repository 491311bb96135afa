"""Sources: where resources come from (files now; the Kubernetes API later)."""
