"""Errors and warnings about the user's resources, each naming where it comes from: file,
document, kind/namespace/name and field path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

from .keys import ResourceKey

Severity = Literal["error", "warning"]

# The log fields of a diagnostic that its `text` field (the whole line) spells out again.
SPELLED_OUT_IN_TEXT = ("file", "document", "resource", "field", "message")


class Origin(NamedTuple):
    """Where a resource was read from: a file and the 1-based index of its YAML document. A tuple
    underneath: every load hashes and compares the origins of all resources (in C, so)."""

    file: str
    document: int = 0

    def __str__(self) -> str:
        return f"{self.file}#{self.document}" if self.document else self.file

    @property
    def from_api_server(self) -> bool:
        """An object read from the Kubernetes API (its `file` is "kubernetes:<where>"): the API
        server dropped the fields its CRD does not have, and the control plane's environment and
        files are not its to substitute."""
        return self.file.startswith(API_SERVER)


# How the origin of an object read from the Kubernetes API begins.
API_SERVER = "kubernetes:"


@dataclass(frozen=True)
class Diagnostic:
    severity: Severity
    message: str
    origin: Origin | None = None
    resource: ResourceKey | None = None
    field: str = ""

    def __str__(self) -> str:
        parts = [self.severity + ":"]
        if self.origin:
            parts.append(f"{self.origin}:")
        if self.resource:
            parts.append(str(self.resource))
        if self.field:
            parts.append(self.field + ":")
        elif self.resource:
            parts[-1] += ":"
        parts.append(self.message)
        return " ".join(parts)

    @property
    def detail(self) -> str:
        """The field and the message, as status conditions carry them: "spec.x: what is wrong"."""
        return f"{self.field}: {self.message}" if self.field else self.message

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def log_fields(self) -> dict[str, str | int]:
        """Key=value fields of its log event: where it comes from (those known), the message, and
        the whole human-readable line as `text` (what the console shows in their place)."""
        fields: dict[str, str | int] = {}
        if self.origin:
            fields["file"] = self.origin.file
            if self.origin.document:
                fields["document"] = self.origin.document
        if self.resource:
            fields["resource"] = str(self.resource)
        if self.field:
            fields["field"] = self.field
        fields["message"] = self.message
        fields["text"] = str(self)
        return fields


def error(
    message: str, origin: Origin | None = None, resource: ResourceKey | None = None, field: str = ""
) -> Diagnostic:
    return Diagnostic("error", message, origin, resource, field)


def warning(
    message: str, origin: Origin | None = None, resource: ResourceKey | None = None, field: str = ""
) -> Diagnostic:
    return Diagnostic("warning", message, origin, resource, field)


def first_few(names: list[str], shown: int = 3) -> str:
    """The first `shown` names, and how many more: what a message that names objects lists."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
