"""Compile stage: resource set -> one IR per Gateway, plus status conditions and diagnostics.

The modules follow the resource graph Gateway -> AIGatewayRoute -> AIServiceBackend ->
BackendSecurityPolicy: compiler (the entry point) -> gateways -> routes -> backends, security and
costs, all sharing one context.CompileContext per Gateway; ir, status and references hold what they
produce and the reference rules."""

from .compiler import CompileResult, compile_resources

__all__ = ["CompileResult", "compile_resources"]
