"""Translated Bedrock requests checked against botocore's own bedrock-runtime service model
(types, unions, required keys), as the AWS SDKs would validate them."""

from __future__ import annotations

import base64
from typing import Any

import botocore.session
from botocore.validate import ParamValidator

SERVICE = botocore.session.get_session().get_service_model("bedrock-runtime")


def blobs_as_bytes(obj: Any) -> Any:
    """Blobs (image, document bytes) travel base64 in JSON; botocore's validator wants the bytes."""
    if isinstance(obj, dict):
        if set(obj) == {"bytes"} and isinstance(obj["bytes"], str):
            return {"bytes": base64.b64decode(obj["bytes"])}
        return {k: blobs_as_bytes(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [blobs_as_bytes(v) for v in obj]
    return obj


def assert_valid_input(operation: str, params: dict[str, Any]) -> None:
    """`params` (modelId included, blobs as bytes) are a valid input of the bedrock-runtime `operation`."""
    report = ParamValidator().validate(params, SERVICE.operation_model(operation).input_shape)
    assert not report.has_errors(), report.generate_report()
