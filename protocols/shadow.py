"""AWS IoT Device Shadow: the document, its merge and delta, request checks and reply payloads.

Exactly what AWS documents (device-shadow-document, device-shadow-mqtt), so awsiotsdk's
``IotShadowClientV2`` and an agent built for AWS IoT Core work against our cloud unchanged:

- an update merges ``state.desired`` / ``state.reported`` into the document key by key; a
  ``null`` value deletes its key (``"desired": null`` deletes the whole section); nested
  objects merge recursively; arrays and scalars replace whole;
- every accepted update bumps ``version`` by one; a request carrying ``version`` is rejected
  with 409 unless it equals the current version (optimistic concurrency);
- the delta holds the desired keys whose value differs from the reported one (absent from
  reported included), nested objects compared key by key, arrays compared whole;
- metadata mirrors the state with ``{"timestamp": epoch_s}`` at each leaf (an array's metadata
  is an array of the elements' metadata), set when the leaf was last updated;
- ``clientToken`` (at most 64 bytes) is echoed in every reply; errors are
  ``{"code", "message", "timestamp", "clientToken"}`` with 400, 404, 409 or 413; the state
  (desired + reported) and a request payload are each at most 8 KB, and at most 6 levels deep.

Pure: no I/O. The cloud's shadow service and the agent's local shadow both build on it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from protocols.errors import ProtocolError

__all__ = [
    "MAX_CLIENT_TOKEN_BYTES", "MAX_DEPTH", "MAX_DOCUMENT_BYTES", "DeleteRequest", "GetRequest",
    "ShadowDocument", "ShadowError", "UpdateOutcome", "UpdateRequest", "apply_delete",
    "apply_update", "client_token_of", "delta", "delta_metadata", "get_payload",
    "parse_delete", "parse_get", "parse_update", "values_equal",
]

MAX_DOCUMENT_BYTES = 8 * 1024
MAX_CLIENT_TOKEN_BYTES = 64
MAX_DEPTH = 6
SECTIONS = ("desired", "reported")

Json = Any  # a JSON value as json.loads returns it
Section = dict[str, Json]


class ShadowError(ProtocolError):
    """A request the shadow service rejects, in AWS's error shape."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def payload(self, client_token: str | None, timestamp: int) -> dict[str, Json]:
        out: dict[str, Json] = {"code": self.code, "message": self.message,
                                "timestamp": timestamp}
        if client_token is not None:
            out["clientToken"] = client_token
        return out


def not_found(thing: str, name: str | None) -> ShadowError:
    return ShadowError(404, f"No shadow exists with name: '{thing if name is None else name}'")


# -- comparison, merge, delta (the algorithm) ------------------------------------------------

def values_equal(a: Json, b: Json) -> bool:
    """JSON equality: ``true`` is not ``1`` (Python's ``==`` says it is), ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and bool(a == b)


def delta(desired: Section | None, reported: Section | None) -> Section:
    """Desired keys whose value differs from reported; nested objects recurse."""
    out: Section = {}
    reported = reported or {}
    for key, want in (desired or {}).items():
        if key not in reported:
            out[key] = copy.deepcopy(want)
        elif isinstance(want, dict) and isinstance(reported[key], dict):
            inner = delta(want, reported[key])
            if inner:
                out[key] = inner
        elif not values_equal(want, reported[key]):
            out[key] = copy.deepcopy(want)
    return out


def delta_metadata(delta_state: Section, desired_meta: Section | None) -> Section:
    """The desired metadata of exactly the keys in ``delta_state``."""
    out: Section = {}
    meta = desired_meta or {}
    for key, value in delta_state.items():
        node = meta.get(key)
        if isinstance(value, dict) and isinstance(node, dict) and "timestamp" not in node:
            out[key] = delta_metadata(value, node)
        elif node is not None:
            out[key] = copy.deepcopy(node)
    return out


def leaf_metadata(value: Json, timestamp: int) -> Json:
    if isinstance(value, dict):
        return {k: leaf_metadata(v, timestamp) for k, v in value.items()}
    if isinstance(value, list):
        return [leaf_metadata(v, timestamp) for v in value]
    return {"timestamp": timestamp}


def merge(section: Section | None, meta: Section | None, patch: Section, timestamp: int,
          ) -> tuple[Section, Section]:
    """``patch`` merged into copies of ``section`` and its metadata; a key whose merge leaves
    an empty object is dropped, like one set to ``null``."""
    state = copy.deepcopy(section or {})
    metadata = copy.deepcopy(meta or {})
    for key, value in patch.items():
        if value is None:
            state.pop(key, None)
            metadata.pop(key, None)
        elif isinstance(value, dict) and isinstance(state.get(key), dict):
            inner_meta = metadata.get(key)
            inner, inner_meta = merge(state[key], inner_meta if isinstance(inner_meta, dict)
                                      else None, value, timestamp)
            if inner:
                state[key], metadata[key] = inner, inner_meta
            else:
                state.pop(key)
                metadata.pop(key, None)
        else:
            cleaned = _without_nulls(value)
            state[key] = cleaned
            metadata[key] = leaf_metadata(cleaned, timestamp)
    return state, metadata


def _without_nulls(value: Json) -> Json:
    """A new object's ``null`` members delete nothing: they are simply not stored."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return copy.deepcopy(value)


def _depth(value: Json) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return max((_depth(v) for v in value), default=0)
    return 0


def _size(value: Json) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


# -- the document ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ShadowDocument:
    """One shadow; ``exists`` is False for one never created or deleted (``version`` then
    carries on from the deleted one, as AWS's does)."""

    version: int = 0
    exists: bool = False
    desired: Section | None = None
    reported: Section | None = None
    metadata: dict[str, Section] = field(default_factory=dict)  # "desired" / "reported"

    def delta(self) -> Section:
        return delta(self.desired, self.reported)

    def state(self) -> dict[str, Section]:
        return {s: v for s, v in (("desired", self.desired), ("reported", self.reported))
                if v is not None}

    def summary(self) -> dict[str, Json]:
        """``{state, metadata, version}`` as in ``/documents``' previous and current."""
        return {"state": self.state(), "metadata": copy.deepcopy(self.metadata),
                "version": self.version}

    def to_json(self) -> str:
        """For storage: state and metadata (version and existence are columns)."""
        return json.dumps({"state": self.state(), "metadata": self.metadata},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None, version: int, exists: bool) -> ShadowDocument:
        if not exists or text is None:
            return cls(version=version, exists=False)
        raw = json.loads(text)
        state = raw.get("state", {})
        return cls(version=version, exists=True, desired=state.get("desired"),
                   reported=state.get("reported"), metadata=raw.get("metadata", {}))


def get_payload(doc: ShadowDocument, timestamp: int, client_token: str | None,
                thing: str, name: str | None) -> dict[str, Json]:
    """``/get/accepted``: state with its delta, metadata, version. Raises 404."""
    if not doc.exists:
        raise not_found(thing, name)
    state: dict[str, Json] = doc.state()
    current_delta = doc.delta()
    if current_delta:
        state["delta"] = current_delta
    out: dict[str, Json] = {"state": state, "metadata": copy.deepcopy(doc.metadata),
                            "version": doc.version, "timestamp": timestamp}
    return _with_token(out, client_token)


def _with_token(payload: dict[str, Json], client_token: str | None) -> dict[str, Json]:
    if client_token is not None:
        payload["clientToken"] = client_token
    return payload


# -- requests -------------------------------------------------------------------------------

@dataclass(frozen=True)
class GetRequest:
    client_token: str | None = None


@dataclass(frozen=True)
class DeleteRequest:
    client_token: str | None = None
    version: int | None = None


@dataclass(frozen=True)
class UpdateRequest:
    """``state`` holds only the sections sent; a section mapped to ``None`` deletes it."""

    state: dict[str, Section | None]
    client_token: str | None = None
    version: int | None = None


def client_token_of(payload: bytes) -> str | None:
    """The request's ``clientToken`` if it is a usable one (to echo even in a rejection)."""
    try:
        raw = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    token = raw.get("clientToken") if isinstance(raw, dict) else None
    if isinstance(token, str) and len(token.encode()) <= MAX_CLIENT_TOKEN_BYTES:
        return token
    return None


def _object(payload: bytes, *, empty_ok: bool) -> dict[str, Json]:
    if len(payload) > MAX_DOCUMENT_BYTES:
        raise ShadowError(413, "The payload exceeds the maximum size allowed")
    if not payload.strip():
        if empty_ok:
            return {}
        raise ShadowError(400, "Missing required node: state")
    try:
        raw = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise ShadowError(400, "Payload contains invalid json") from None
    if not isinstance(raw, dict):
        raise ShadowError(400, "Payload contains invalid json")
    token = raw.get("clientToken")
    if token is not None and (not isinstance(token, str)
                              or len(token.encode()) > MAX_CLIENT_TOKEN_BYTES):
        raise ShadowError(400, f"clientToken must be a string of at most "
                               f"{MAX_CLIENT_TOKEN_BYTES} bytes")
    return raw


def _version(raw: dict[str, Json]) -> int | None:
    version = raw.get("version")
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ShadowError(400, "Invalid version: must be a non-negative integer")
    return version


def parse_get(payload: bytes) -> GetRequest:
    return GetRequest(_object(payload, empty_ok=True).get("clientToken"))


def parse_delete(payload: bytes) -> DeleteRequest:
    raw = _object(payload, empty_ok=True)
    return DeleteRequest(raw.get("clientToken"), _version(raw))


def parse_update(payload: bytes) -> UpdateRequest:
    """Raises ``ShadowError`` (400 or 413) naming what is wrong."""
    raw = _object(payload, empty_ok=False)
    if "state" not in raw:
        raise ShadowError(400, "Missing required node: state")
    state = raw["state"]
    if state is None:  # clears the whole state
        return UpdateRequest({s: None for s in SECTIONS}, raw.get("clientToken"), _version(raw))
    if not isinstance(state, dict):
        raise ShadowError(400, "State node must be an object")
    sections: dict[str, Section | None] = {}
    for key, value in state.items():
        if key not in SECTIONS:
            raise ShadowError(400, f"State contains an invalid node: '{key}'")
        if value is not None and not isinstance(value, dict):
            raise ShadowError(400, f"{key} node must be an object")
        if value is not None and _depth(value) > MAX_DEPTH:
            raise ShadowError(400, f"JSON contains too many levels of nesting; maximum is "
                                   f"{MAX_DEPTH}")
        sections[key] = value
    if not sections:
        raise ShadowError(400, "State node must contain desired or reported")
    return UpdateRequest(sections, raw.get("clientToken"), _version(raw))


# -- applying requests ----------------------------------------------------------------------

@dataclass(frozen=True)
class UpdateOutcome:
    """The new document and what to publish: accepted reply, delta (``None``: none to send)
    and documents."""

    document: ShadowDocument
    accepted: dict[str, Json]
    delta: dict[str, Json] | None
    documents: dict[str, Json]


def _check_version(doc: ShadowDocument, version: int | None) -> None:
    if version is not None and version != doc.version:
        raise ShadowError(409, "Version conflict")


def apply_update(doc: ShadowDocument, request: UpdateRequest, timestamp: int) -> UpdateOutcome:
    """Merge ``request`` into ``doc`` at ``timestamp`` (epoch s). Raises 409 or 413.

    A delta goes out when the merged document has one and the update either set desired
    values or changed the delta: a reported-only update that leaves the delta as it was
    (e.g. a periodic report) does not resend it.
    """
    _check_version(doc, request.version)
    sections: dict[str, Section | None] = {"desired": doc.desired, "reported": doc.reported}
    metadata = copy.deepcopy(doc.metadata)
    request_meta: dict[str, Json] = {}
    for name, patch in request.state.items():
        if patch is None:
            sections[name] = None
            metadata.pop(name, None)
            request_meta[name] = {"timestamp": timestamp}
            continue
        merged, merged_meta = merge(sections[name], metadata.get(name), patch, timestamp)
        sections[name], metadata[name] = (merged or None), merged_meta
        if not merged:
            metadata.pop(name, None)
        request_meta[name] = leaf_metadata(patch, timestamp)
    if _size({k: v for k, v in sections.items() if v is not None}) > MAX_DOCUMENT_BYTES:
        raise ShadowError(413, "The payload exceeds the maximum size allowed")
    new = ShadowDocument(version=doc.version + 1, exists=True, desired=sections["desired"],
                         reported=sections["reported"], metadata=metadata)
    token = request.client_token
    accepted = _with_token({"state": copy.deepcopy(request.state), "metadata": request_meta,
                            "version": new.version, "timestamp": timestamp}, token)
    new_delta = new.delta()
    sent_desired = bool(request.state.get("desired"))
    delta_msg: dict[str, Json] | None = None
    if new_delta and (sent_desired or not values_equal(new_delta, doc.delta())):
        delta_msg = _with_token({"version": new.version, "timestamp": timestamp,
                                 "state": new_delta,
                                 "metadata": delta_metadata(new_delta,
                                                            metadata.get("desired"))}, token)
    previous = doc.summary() if doc.exists else None
    documents = _with_token({"previous": previous, "current": new.summary(),
                             "timestamp": timestamp}, token)
    return UpdateOutcome(new, accepted, delta_msg, documents)


def apply_delete(doc: ShadowDocument, request: DeleteRequest, timestamp: int, thing: str,
                 name: str | None) -> tuple[ShadowDocument, dict[str, Json]]:
    """The tombstone (version kept) and the ``/delete/accepted`` reply. Raises 404 or 409."""
    if not doc.exists:
        raise not_found(thing, name)
    _check_version(doc, request.version)
    reply = _with_token({"version": doc.version, "timestamp": timestamp}, request.client_token)
    return ShadowDocument(version=doc.version, exists=False), reply
