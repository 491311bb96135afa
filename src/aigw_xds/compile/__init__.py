"""Compile stage: resource set -> one IR per Gateway, plus status conditions and diagnostics."""

from .compiler import CompileResult, compile_resources

__all__ = ["CompileResult", "compile_resources"]
