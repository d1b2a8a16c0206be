"""The shadow algorithm against AWS's documented examples (device-shadow-document,
device-shadow-data-flow): delta, null deletes, nested objects, arrays, versions, metadata,
clientToken, limits and error shapes."""

from __future__ import annotations

import json

import pytest

from protocols.device_shadow import desired_actions, shadow_command_id
from protocols.errors import InvalidMessage
from protocols.shadow import (
    DeleteRequest,
    ShadowDocument,
    ShadowError,
    UpdateRequest,
    apply_delete,
    apply_update,
    client_token_of,
    delta,
    get_payload,
    parse_get,
    parse_update,
    values_equal,
)

T = 1_795_000_000


def update(doc: ShadowDocument, body: dict[str, object], ts: int = T) -> ShadowDocument:
    return apply_update(doc, parse_update(json.dumps(body).encode()), ts).document


def test_delta_of_awss_example_document() -> None:
    # AWS: desired {color RED, state STOP}, reported {color GREEN, engine ON} -> delta
    # {color RED, state STOP}; engine (reported only) is not in the delta.
    desired = {"color": "RED", "state": "STOP"}
    reported = {"color": "GREEN", "engine": "ON"}
    assert delta(desired, reported) == {"color": "RED", "state": "STOP"}


def test_delta_keeps_nested_paths_and_only_differing_leaves() -> None:
    desired = {"lights": {"color": "RED", "level": 5}, "mode": "eco"}
    reported = {"lights": {"color": "RED", "level": 3}, "mode": "eco"}
    assert delta(desired, reported) == {"lights": {"level": 5}}


def test_delta_compares_arrays_whole() -> None:
    # AWS: arrays are treated as values; any difference sends the whole desired array.
    assert delta({"colors": ["RED", "GREEN"]}, {"colors": ["RED"]}) == {
        "colors": ["RED", "GREEN"]}
    assert delta({"colors": ["RED", "GREEN"]}, {"colors": ["RED", "GREEN"]}) == {}


def test_delta_tells_booleans_from_numbers() -> None:
    assert delta({"on": True}, {"on": 1}) == {"on": True}
    assert delta({"level": 1}, {"level": 1.0}) == {}
    assert not values_equal(False, 0)


def test_update_creates_shadow_at_version_1_with_metadata() -> None:
    outcome = apply_update(ShadowDocument(), UpdateRequest(
        {"desired": {"color": "RED"}}, client_token="tok-1"), T)
    doc = outcome.document
    assert (doc.exists, doc.version, doc.desired) == (True, 1, {"color": "RED"})
    assert doc.metadata == {"desired": {"color": {"timestamp": T}}}
    assert outcome.accepted == {"state": {"desired": {"color": "RED"}},
                                "metadata": {"desired": {"color": {"timestamp": T}}},
                                "version": 1, "timestamp": T, "clientToken": "tok-1"}
    assert outcome.delta == {"version": 1, "timestamp": T, "state": {"color": "RED"},
                             "metadata": {"color": {"timestamp": T}}, "clientToken": "tok-1"}
    assert outcome.documents["previous"] is None
    assert outcome.documents["current"]["version"] == 1


def test_null_deletes_a_key_and_a_whole_section() -> None:
    doc = update(ShadowDocument(), {"state": {"desired": {"engine": "ON", "color": "RED"},
                                              "reported": {"color": "GREEN"}}})
    doc = update(doc, {"state": {"desired": {"engine": None}}}, T + 1)
    assert doc.desired == {"color": "RED"}
    assert "engine" not in doc.metadata["desired"]
    doc = update(doc, {"state": {"reported": {"color": "RED"}, "desired": None}}, T + 2)
    assert doc.desired is None and "desired" not in doc.metadata
    assert doc.state() == {"reported": {"color": "RED"}}
    assert doc.version == 3


def test_nested_objects_merge_key_by_key() -> None:
    doc = update(ShadowDocument(), {"state": {"reported": {"lights": {"color": "RED",
                                                                       "level": 3}}}})
    doc = update(doc, {"state": {"reported": {"lights": {"level": 5}}}}, T + 9)
    assert doc.reported == {"lights": {"color": "RED", "level": 5}}
    assert doc.metadata["reported"] == {"lights": {"color": {"timestamp": T},
                                                   "level": {"timestamp": T + 9}}}
    # deleting the last member of a nested object removes the object
    doc = update(doc, {"state": {"reported": {"lights": {"color": None, "level": None}}}})
    assert doc.reported is None


def test_arrays_replace_whole_and_carry_per_element_metadata() -> None:
    doc = update(ShadowDocument(), {"state": {"reported": {"colors": ["RED", "GREEN"]}}})
    doc = update(doc, {"state": {"reported": {"colors": ["BLUE"]}}}, T + 1)
    assert doc.reported == {"colors": ["BLUE"]}
    assert doc.metadata["reported"]["colors"] == [{"timestamp": T + 1}]


def test_version_conflict_is_409_and_matching_version_is_accepted() -> None:
    doc = update(ShadowDocument(), {"state": {"desired": {"a": 1}}})
    with pytest.raises(ShadowError) as err:
        apply_update(doc, parse_update(b'{"state":{"desired":{"a":2}},"version":7}'), T)
    assert err.value.code == 409
    assert err.value.payload("tok", T) == {"code": 409, "message": "Version conflict",
                                           "timestamp": T, "clientToken": "tok"}
    ok = apply_update(doc, parse_update(b'{"state":{"desired":{"a":2}},"version":1}'), T)
    assert ok.document.version == 2


def test_reported_only_update_resends_delta_only_when_it_changed() -> None:
    doc = update(ShadowDocument(), {"state": {"desired": {"a": 1, "b": 2}}})
    same = apply_update(doc, parse_update(b'{"state":{"reported":{"c":3}}}'), T)
    assert same.delta is None  # the delta is still {a:1, b:2}: nothing new to send
    smaller = apply_update(doc, parse_update(b'{"state":{"reported":{"a":1}}}'), T)
    assert smaller.delta is not None and smaller.delta["state"] == {"b": 2}
    met = apply_update(smaller.document,
                       parse_update(b'{"state":{"reported":{"b":2}}}'), T)
    assert met.delta is None and met.document.delta() == {}


def test_get_includes_delta_and_404s_a_missing_shadow() -> None:
    doc = update(ShadowDocument(), {"state": {"desired": {"a": 1}, "reported": {"a": 0}}})
    body = get_payload(doc, T, "t", "gw-1", None)
    assert body["state"] == {"desired": {"a": 1}, "reported": {"a": 0}, "delta": {"a": 1}}
    assert (body["version"], body["clientToken"]) == (1, "t")
    with pytest.raises(ShadowError) as err:
        get_payload(ShadowDocument(), T, None, "gw-1", "relay")
    assert err.value.code == 404 and "relay" in err.value.message


def test_delete_keeps_the_version_for_the_next_shadow() -> None:
    doc = update(update(ShadowDocument(), {"state": {"desired": {"a": 1}}}),
                 {"state": {"desired": {"a": 2}}})
    tombstone, reply = apply_delete(doc, DeleteRequest("tok"), T, "gw-1", None)
    assert reply == {"version": 2, "timestamp": T, "clientToken": "tok"}
    assert not tombstone.exists
    with pytest.raises(ShadowError) as err:
        apply_delete(tombstone, DeleteRequest(), T, "gw-1", None)
    assert err.value.code == 404
    assert update(tombstone, {"state": {"reported": {"a": 2}}}).version == 3


@pytest.mark.parametrize(("payload", "code", "words"), [
    (b"{not json", 400, "invalid json"),
    (b"[1,2]", 400, "invalid json"),
    (b'{"desired": {"a": 1}}', 400, "Missing required node: state"),
    (b'{"state": {"wanted": {"a": 1}}}', 400, "invalid node: 'wanted'"),
    (b'{"state": {"desired": 5}}', 400, "must be an object"),
    (b'{"state": {"desired": {"a": 1}}, "version": "3"}', 400, "version"),
    (b'{"state": {"desired": {"a": 1}}, "clientToken": "' + b"x" * 65 + b'"}', 400,
     "clientToken"),
    (b'{"state": {"desired": ' + b'{"a":' * 7 + b"1" + b"}" * 7 + b"}}", 400, "nesting"),
    (b'{"state": {"desired": {"a": "' + b"x" * 9000 + b'"}}}', 413, "maximum size"),
])
def test_bad_requests_get_awss_error_codes(payload: bytes, code: int, words: str) -> None:
    with pytest.raises(ShadowError) as err:
        parse_update(payload)
    assert err.value.code == code
    assert words.lower() in err.value.message.lower()


def test_merged_document_over_8kb_is_413() -> None:
    doc = update(ShadowDocument(), {"state": {"desired": {"a": "x" * 4000}}})
    doc = update(doc, {"state": {"reported": {"b": "y" * 3900}}})
    with pytest.raises(ShadowError) as err:
        apply_update(doc, parse_update(json.dumps(
            {"state": {"reported": {"c": "z" * 1000}}}).encode()), T)
    assert err.value.code == 413


def test_client_token_is_echoed_even_from_a_rejected_request() -> None:
    assert client_token_of(b'{"clientToken": "abc", "state": 3}') == "abc"
    assert client_token_of(b"{broken") is None
    assert parse_get(b"").client_token is None
    assert parse_get(b'{"clientToken": "q"}').client_token == "q"


def test_state_null_clears_desired_and_reported() -> None:
    doc = update(ShadowDocument(), {"state": {"desired": {"a": 1}, "reported": {"a": 1}}})
    doc = update(doc, {"state": None})
    assert doc.exists and doc.state() == {} and doc.version == 2


def test_document_round_trips_through_storage_json() -> None:
    doc = update(ShadowDocument(), {"state": {"desired": {"a": [1, 2]}, "reported": {"b": {}}}})
    again = ShadowDocument.from_json(doc.to_json(), doc.version, True)
    assert again == doc


def test_desired_maps_to_commands_and_bad_values_name_the_key() -> None:
    actions = desired_actions({"state": "on", "value": 55})
    assert [(a.key, a.action.value, a.params) for a in actions] == [
        ("state", "switch_on", {}), ("value", "set_setpoint", {"value": 55.0})]
    with pytest.raises(InvalidMessage, match=r"desired\.state"):
        desired_actions({"state": "maybe"})
    with pytest.raises(InvalidMessage, match=r"desired\.colour"):
        desired_actions({"colour": "red"})
    with pytest.raises(InvalidMessage, match=r"desired\.amps"):
        desired_actions({"amps": True})


def test_shadow_command_ids_are_stable_per_version_and_key() -> None:
    first = shadow_command_id("gw-1", "heater", 4, "state")
    assert first == shadow_command_id("gw-1", "heater", 4, "state")
    assert first != shadow_command_id("gw-1", "heater", 5, "state")
    assert first != shadow_command_id("gw-1", "heater", 4, "value")
    assert 8 <= len(first) <= 64
