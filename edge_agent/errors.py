"""The one error root of the edge agent."""


class EdgeAgentError(Exception):
    """Root of every error the agent raises; adapters translate third-party errors into it."""


class ConfigError(EdgeAgentError):
    """The config file is invalid; ``key`` names the setting and the message says the fix."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


class BusError(EdgeAgentError):
    """A Modbus request failed (timeout, no answer, exception response, bus down)."""

    def __init__(self, message: str, *, exception_code: int | None = None) -> None:
        super().__init__(message)
        self.exception_code = exception_code


class BusConnectError(BusError):
    """The bus itself cannot be opened (serial port missing or not permitted, TCP refused):
    no request reached any device."""
