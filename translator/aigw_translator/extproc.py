"""Small helpers between ext_proc protos and plain Python values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.type.v3 import http_status_pb2
from google.protobuf import json_format, struct_pb2, text_format

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def headers_to_dict(headers: ep.HttpHeaders) -> dict[str, str]:
    """Lower-case name -> value; a repeated header keeps its last value."""
    out: dict[str, str] = {}
    for h in headers.headers.headers:
        out[h.key.lower()] = h.raw_value.decode("utf-8", errors="replace") if h.raw_value else h.value
    return out


def is_header_safe(value: str) -> bool:
    """False for a value with a control character (NUL, CR and LF make Envoy refuse the whole
    header mutation, a 500): a client-chosen value such as the model goes into a header only when
    this holds, and is a 400 otherwise."""
    return not any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)


def header_mutation(set_headers: Mapping[str, str] | None = None, remove: Iterable[str] = ()) -> ep.HeaderMutation:
    set_headers = set_headers or {}
    return ep.HeaderMutation(
        set_headers=[
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=k, raw_value=v.encode("utf-8")), append_action=_OVERWRITE
            )
            for k, v in set_headers.items()
        ],
        remove_headers=[r for r in dict.fromkeys(remove) if r not in set_headers],
    )


def to_struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(dict(value))
    return s


def dynamic_metadata(namespace: str, fields: Mapping[str, Any]) -> struct_pb2.Struct:
    return to_struct({namespace: dict(fields)})


def metadata_context(req: ep.ProcessingRequest) -> dict[str, dict[str, Any]]:
    """Forwarded dynamic metadata: namespace -> fields (untyped namespaces only)."""
    return {ns: json_format.MessageToDict(s) for ns, s in req.metadata_context.filter_metadata.items()}


def attributes(req: ep.ProcessingRequest) -> dict[str, Any]:
    """Attribute name -> Python value. Envoy 1.40 renders message-typed attributes (such as
    xds.upstream_host_metadata) as protobuf text format strings; scalars come as plain values."""
    out: dict[str, Any] = {}
    for struct in req.attributes.values():
        for key, value in struct.fields.items():
            kind = value.WhichOneof("kind")
            if kind == "string_value":
                out[key] = value.string_value
            elif kind == "struct_value":
                out[key] = json_format.MessageToDict(value.struct_value)
            elif kind == "number_value":
                out[key] = value.number_value
            elif kind == "bool_value":
                out[key] = value.bool_value
    return out


def metadata_field(attribute_value: Any, namespace: str, key: str) -> str:
    """A string field of filter metadata carried in an attribute (text-format Metadata, a Struct
    rendered as a dict, or already the plain string value)."""
    if isinstance(attribute_value, dict):
        fm = attribute_value.get("filter_metadata") or attribute_value.get("filterMetadata") or attribute_value
        value = (fm.get(namespace) or {}).get(key) if isinstance(fm, dict) else None
        return value if isinstance(value, str) else ""
    if not isinstance(attribute_value, str) or not attribute_value:
        return ""
    if not attribute_value.lstrip().startswith("filter_metadata"):
        return attribute_value
    return _text_metadata_field(attribute_value, namespace, key)


@lru_cache(maxsize=4096)
def _text_metadata_field(text: str, namespace: str, key: str) -> str:
    # Parsing text format is slow (about 150 us) and the strings repeat per endpoint: cached.
    md = base_pb2.Metadata()
    try:
        text_format.Parse(text, md)
    except text_format.ParseError:
        return ""
    if namespace not in md.filter_metadata:
        return ""
    field = md.filter_metadata[namespace].fields.get(key)
    return field.string_value if field is not None else ""


def immediate(
    status: int,
    body: bytes,
    content_type: str = "application/json",
    details: str = "aigw_error",
    extra_headers: Mapping[str, str] | None = None,
) -> ep.ProcessingResponse:
    """An answer of the translator's own. Its `details` (Envoy's response code details) say it is
    the translator's: the local replies of a route to an InferencePool tell the endpoint picker's,
    which carry none, by them."""
    hdrs = {"content-type": content_type, **(extra_headers or {})}
    return ep.ProcessingResponse(
        immediate_response=ep.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=status),
            headers=header_mutation(hdrs),
            body=body,
            details=details,
        )
    )


def streamed_response_mode() -> processing_mode_pb2.ProcessingMode:
    return processing_mode_pb2.ProcessingMode(
        response_body_mode=processing_mode_pb2.ProcessingMode.STREAMED,
        response_trailer_mode=processing_mode_pb2.ProcessingMode.SKIP,
    )


def duplex_response_mode() -> processing_mode_pb2.ProcessingMode:
    """The response body in FULL_DUPLEX_STREAMED: the translator may answer chunks when it likes,
    and end the body itself (Envoy requires the trailers to be sent to the processor in this mode)."""
    return processing_mode_pb2.ProcessingMode(
        response_body_mode=processing_mode_pb2.ProcessingMode.FULL_DUPLEX_STREAMED,
        response_trailer_mode=processing_mode_pb2.ProcessingMode.SEND,
    )


def streamed_body(body: bytes, end_of_stream: bool) -> ep.ProcessingResponse:
    """A response body chunk in FULL_DUPLEX_STREAMED mode: what Envoy sends on to the client."""
    return ep.ProcessingResponse(
        response_body=ep.BodyResponse(
            response=ep.CommonResponse(
                body_mutation=ep.BodyMutation(
                    streamed_response=ep.StreamedBodyResponse(body=body, end_of_stream=end_of_stream)
                )
            )
        )
    )
