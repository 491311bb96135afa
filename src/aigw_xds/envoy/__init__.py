"""Helpers to run a local Envoy: bootstrap generation and process management."""
