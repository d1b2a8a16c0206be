"""Log redaction (messages, args, extras, tracebacks), JSON lines with trace ids, sampling."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from cloud_sync import logs as cloud_logs
from edge_agent import logs as agent_logs
from edge_agent.logs import LogSampler, sampled_by_key
from observability import tracing
from protocols.redact import MASK, RedactionFilter, redact_text, redact_value

PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAsecretsecret\nAbCdEf==\n"
       "-----END RSA PRIVATE KEY-----")


@pytest.mark.parametrize(("text", "secret", "kept"), [
    ("login password=hunter2 ok", "hunter2", "password=***"),
    ("passwd: hunter2", "hunter2", "passwd: ***"),
    ('{"client_secret": "s3cr3t", "user": "bob"}', "s3cr3t", '"user": "bob"'),
    ("refresh_token=abc.def.ghi&x=1", "abc.def.ghi", "&x=1"),
    ("api_key=AKIA1234", "AKIA1234", "api_key=***"),
    ("apikey: 'k-999'", "k-999", "apikey: '***"),
    ("X-Api-Key: zzz777", "zzz777", "X-Api-Key: ***"),
    ("Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi", "Authorization: ***"),
    ("sent header authorization=Basic dXNlcjpwYXNz", "dXNlcjpwYXNz", "authorization=***"),
    ("calling with Bearer eyJhbGciOi.payload.sig now", "eyJhbGciOi", "Bearer *** now"),
    ("private_key=/etc/key.pem", "/etc/key.pem", "private_key=***"),
    (f"loaded key {PEM} done", "MIIEowIBAAKCAQEA", "done"),
    ("db postgresql+psycopg://homewatt:pa55@db.example/hw down",
     "pa55", "postgresql+psycopg://homewatt:***@db.example/hw down"),
    ("broker mqtts://dev:tok@broker:8883", "tok@", "mqtts://dev:***@broker:8883"),
])
def test_secrets_in_text_are_masked(text: str, secret: str, kept: str) -> None:
    redacted = redact_text(text)
    assert secret not in redacted
    assert kept in redacted


@pytest.mark.parametrize("text", [
    "meter m1: counter energy_wh=1234 is implausible", "command abc123 executed",
    "postgresql://db.example/hw", "key_file=/etc/homewatt/cert.key", "max 5 tokens",
    "idempotency_key=k-1"])
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


def test_structured_values_are_masked_by_key_at_any_depth() -> None:
    value = {"user": "bob", "password": "hunter2", "headers": {"Authorization": "Bearer x"},
             "nested": [{"api_key": 42}], "url": "postgresql://u:p@h/db", "count": 3}
    assert redact_value(value) == {
        "user": "bob", "password": MASK, "headers": {"Authorization": MASK},
        "nested": [{"api_key": MASK}], "url": "postgresql://u:***@h/db", "count": 3}


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    cloud_logs.configure_logging(logging.DEBUG, "json", stream=stream)
    try:
        yield logging.getLogger("homewatt.test.logs"), stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_have_the_fields_and_redacted_args_and_extras(
        captured: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = captured
    log.info("connecting to %s", "postgresql://u:pw@h/db",
             extra={"gateway_id": "gw-1", "token": "t0k3n", "auth": {"password": "p"}})
    [line] = lines(stream)
    assert line["level"] == "INFO" and line["logger"] == "homewatt.test.logs"
    assert line["ts"].endswith("Z") and "T" in line["ts"]
    assert line["message"] == "connecting to postgresql://u:***@h/db"
    assert (line["gateway_id"], line["token"], line["auth"]) == ("gw-1", MASK, {"password": MASK})
    assert "trace_id" not in line


def test_an_exception_traceback_is_redacted(captured: tuple[logging.Logger, io.StringIO],
                                            ) -> None:
    log, stream = captured
    try:
        raise RuntimeError("auth failed for password=hunter2")
    except RuntimeError:
        log.exception("connect failed")
    [line] = lines(stream)
    assert line["level"] == "ERROR" and "RuntimeError" in line["exc"]
    assert "hunter2" not in stream.getvalue()


def test_json_lines_carry_the_active_span_ids(captured: tuple[logging.Logger, io.StringIO],
                                              ) -> None:
    log, stream = captured
    provider = TracerProvider()
    tracing.install_tracer_provider(provider)
    try:
        with tracing.span("work"):
            ids = tracing.current_span_ids()
            log.warning("retrying")
    finally:
        tracing.install_tracer_provider(None)
        provider.shutdown()
    [line] = lines(stream)
    assert ids is not None and (line["trace_id"], line["span_id"]) == ids


def test_text_format_is_redacted_too() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    agent_logs.configure_logging("INFO", "text", stream=stream)
    try:
        logging.getLogger("homewatt.test.text").info("key %s", PEM)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert "INFO homewatt.test.text: key -----BEGIN RSA PRIVATE KEY-----***" in stream.getvalue()
    assert "MIIE" not in stream.getvalue()


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="json, text"):
        cloud_logs.configure_logging("INFO", "xml")


def test_the_filter_never_drops_a_record() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token=%s", ("abc",), None)
    assert RedactionFilter().filter(record) is True
    assert record.getMessage() == "token=***"


def test_the_sampler_logs_the_first_event_per_key_then_one_in_n() -> None:
    sampler = LogSampler(one_in=10)
    decisions = [sampler.should_log("m1/energy") for _ in range(25)]
    logged = [i for i, (log_it, _) in enumerate(decisions) if log_it]
    assert logged == [0, 10, 20]
    assert [decisions[i][1] for i in logged] == [0, 9, 9]
    assert sampler.should_log("m2/energy") == (True, 0)


def test_the_sampler_forgets_the_oldest_key_at_its_bound() -> None:
    sampler = LogSampler(one_in=5, max_keys=2)
    for key in ("a", "b", "c"):
        sampler.should_log(key)
    assert sampler.should_log("a") == (True, 0)  # forgotten: logged as new


def test_hash_sampling_is_deterministic_and_near_one_in_n() -> None:
    keys = [f"meter-{i}" for i in range(2000)]
    chosen = [k for k in keys if sampled_by_key(k, 10)]
    assert chosen == [k for k in keys if sampled_by_key(k, 10)]
    assert 100 < len(chosen) < 300
    assert all(sampled_by_key(k, 1) for k in keys[:10])
