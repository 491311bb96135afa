"""Typed models of the resources aigw-xds reads (Kubernetes field names, camelCase on the wire)."""
