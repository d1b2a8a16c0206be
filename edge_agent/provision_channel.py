"""The :class:`~edge_agent.ports.IdentityChannel` adapters: ``AwsIotIdentityChannel`` is
awsiotsdk's own ``IotIdentityClientV2`` on an MQTT 5 mTLS connection with the claim certificate,
exactly what AWS documents for fleet provisioning; ``FakeIdentityChannel`` answers from a
handler, for unit tests."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from awscrt import mqtt5, mqtt_request_response
from awsiot import V2ServiceException, iotidentity

from edge_agent.awsiot_client import AwsIotError, MtlsEndpoint, build_client, crt_error
from edge_agent.ports import CertificateGrant, Registration
from edge_agent.provision import ProvisionError, ProvisioningRejected, ProvisionRequest
from edge_agent.uplink import UplinkError, parse_broker_url

__all__ = ["AwsIotIdentityChannel", "FakeIdentityChannel", "connect_check"]

T = TypeVar("T")


class _Connection:
    """An awscrt client that is started and known to be connected, or a clear error."""

    def __init__(self, endpoint: MtlsEndpoint, client_id: str, timeout_s: float) -> None:
        # The first attempt decides: awscrt would retry a refused TLS handshake until the
        # timeout, and an installer should hear at once that the certificate is not accepted.
        self._settled = threading.Event()
        self._stopped = threading.Event()
        self._failure: str | None = None
        self.client = build_client(endpoint, client_id=client_id,
                                   on_lifecycle_connection_success=lambda _d: self._settled.set(),
                                   on_lifecycle_connection_failure=self._failed,
                                   on_lifecycle_stopped=lambda _d: self._stopped.set())
        self.client.start()
        if not self._settled.wait(timeout_s) or self._failure is not None:
            self.close()
            why = self._failure or f"no answer within {timeout_s:.0f}s"
            raise ProvisionError(f"cannot connect to {endpoint.host}:{endpoint.port}: {why}")

    def _failed(self, data: mqtt5.LifecycleConnectFailureData) -> None:
        self._failure = crt_error(data.exception) if data.exception else "refused"
        self._settled.set()

    def close(self) -> None:
        self.client.stop()
        self._stopped.wait(5)


def _endpoint(request: ProvisionRequest, cert: Any, key: Any) -> MtlsEndpoint:
    try:
        address = parse_broker_url(request.broker_url)
    except UplinkError as exc:
        raise ProvisionError(str(exc)) from exc
    return MtlsEndpoint(address.host, address.port, cert, key, request.ca_file)


class AwsIotIdentityChannel:
    def __init__(self, connection: _Connection, timeout_s: float) -> None:
        self._connection = connection
        self._timeout_s = timeout_s
        self._identity = iotidentity.IotIdentityClientV2(
            connection.client, mqtt_request_response.ClientOptions(
                max_request_response_subscriptions=2, max_streaming_subscriptions=1,
                operation_timeout_in_seconds=max(1, int(timeout_s))))

    @classmethod
    def open(cls, request: ProvisionRequest) -> AwsIotIdentityChannel:
        """Connect with the claim certificate; raises ``ProvisionError`` saying what failed."""
        endpoint = _endpoint(request, request.claim_cert, request.claim_key)
        try:
            connection = _Connection(endpoint, f"provision-{request.name}", request.timeout_s)
        except AwsIotError as exc:
            raise ProvisionError(f"--claim-cert / --claim-key / --ca-file: {exc}") from exc
        except ProvisionError as exc:
            raise ProvisionError(f"{exc}. Check --broker, --ca-file and the claim "
                                 "certificate") from exc
        return cls(connection, request.timeout_s)

    def create_certificate_from_csr(self, csr_pem: str) -> CertificateGrant:
        response = self._call(self._identity.create_certificate_from_csr(
            iotidentity.CreateCertificateFromCsrRequest(certificate_signing_request=csr_pem)))
        if not (response.certificate_pem and response.certificate_ownership_token):
            raise ProvisionError("CreateCertificateFromCsr answered without a certificate")
        return CertificateGrant(str(response.certificate_id), response.certificate_pem,
                                response.certificate_ownership_token)

    def register_thing(self, template: str, ownership_token: str,
                       parameters: Mapping[str, str]) -> Registration:
        response = self._call(self._identity.register_thing(iotidentity.RegisterThingRequest(
            template_name=template, certificate_ownership_token=ownership_token,
            parameters=dict(parameters))))
        if not response.thing_name:
            raise ProvisionError("RegisterThing answered without a thing name")
        return Registration(response.thing_name, dict(response.device_configuration or {}))

    def _call(self, future: concurrent.futures.Future[T]) -> T:
        try:
            return future.result(self._timeout_s + 5)
        except V2ServiceException as exc:
            error = exc.modeled_error
            if error is None:
                raise ProvisionError(f"no answer from the cloud's provisioning service: "
                                     f"{crt_error(exc.inner_error or exc)}") from exc
            raise ProvisioningRejected(int(error.status_code or 0), str(error.error_code),
                                       str(error.error_message)) from exc
        except concurrent.futures.TimeoutError as exc:
            raise ProvisionError(f"no answer from the cloud within {self._timeout_s:.0f}s: is "
                                 "its provisioning service running?") from exc

    def close(self) -> None:
        self._connection.close()


def connect_check(request: ProvisionRequest, cert_file: Any, key_file: Any,
                  client_id: str) -> None:
    """Connect once with the new identity and disconnect; raises ``ProvisionError``."""
    endpoint = _endpoint(request, cert_file, key_file)
    try:
        _Connection(endpoint, client_id, request.timeout_s).close()
    except AwsIotError as exc:
        raise ProvisionError(str(exc)) from exc


Handler = Callable[[str, dict[str, Any]], dict[str, Any]]


class FakeIdentityChannel:
    """Answers each call with ``handler(operation, request)`` (``"create"`` with
    ``{"csr": ...}``, ``"register"`` with ``{"template", "token", "parameters"}``); a returned
    ``{"statusCode", "errorCode", "errorMessage"}`` is a rejection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.closed = False

    def _ask(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((operation, request))
        answer = self.handler(operation, request)
        if "errorCode" in answer:
            raise ProvisioningRejected(answer["statusCode"], answer["errorCode"],
                                       answer["errorMessage"])
        return answer

    def create_certificate_from_csr(self, csr_pem: str) -> CertificateGrant:
        answer = self._ask("create", {"csr": csr_pem})
        return CertificateGrant(answer["certificateId"], answer["certificatePem"],
                                answer["certificateOwnershipToken"])

    def register_thing(self, template: str, ownership_token: str,
                       parameters: Mapping[str, str]) -> Registration:
        answer = self._ask("register", {"template": template, "token": ownership_token,
                                        "parameters": dict(parameters)})
        return Registration(answer["thingName"], answer.get("deviceConfiguration", {}))

    def close(self) -> None:
        self.closed = True
