"""Errors and warnings about the user's resources, each naming where it comes from: file,
document, kind/namespace/name and field path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .keys import ResourceKey

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class Origin:
    """Where a resource was read from: a file and the 1-based index of its YAML document."""

    file: str
    document: int = 0

    def __str__(self) -> str:
        return f"{self.file}#{self.document}" if self.document else self.file


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
    def is_error(self) -> bool:
        return self.severity == "error"


def error(
    message: str, origin: Origin | None = None, resource: ResourceKey | None = None, field: str = ""
) -> Diagnostic:
    return Diagnostic("error", message, origin, resource, field)


def warning(
    message: str, origin: Origin | None = None, resource: ResourceKey | None = None, field: str = ""
) -> Diagnostic:
    return Diagnostic("warning", message, origin, resource, field)
