"""The one place Google API clients are built.

Every client takes its endpoint from here, so pointing gcpgpu at the emulator (``--endpoint`` or
``GCPGPU_ENDPOINT``) redirects all traffic, including operation polling: providers wait through
their own ``*OperationsClient`` built here, never through ``ExtendedOperation.result()``, whose
internal client ignores ``client_options`` and would reach the real Google host.
"""
from __future__ import annotations

import os
import threading

ENDPOINT_ENV = "GCPGPU_ENDPOINT"


def endpoint_from_env() -> str | None:
    return os.environ.get(ENDPOINT_ENV) or None


class ClientFactory:
    """Builds and caches clients: anonymous against an emulator endpoint, ADC otherwise."""

    def __init__(self, endpoint: str | None = None):
        self.endpoint = endpoint
        self._cache: dict = {}
        self._lock = threading.Lock()

    @property
    def emulated(self) -> bool:
        return self.endpoint is not None

    def get(self, client_class, **kwargs):
        """A shared client of ``client_class`` (a GAPIC client class, e.g. compute_v1.InstancesClient)."""
        key = (client_class, tuple(sorted(kwargs.items())))
        with self._lock:
            if key not in self._cache:
                self._cache[key] = client_class(**self._options(), **kwargs)
            return self._cache[key]

    def _options(self) -> dict:
        if self.endpoint is None:
            return {}  # Application Default Credentials and the real endpoints
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        return {
            "credentials": AnonymousCredentials(),
            "client_options": ClientOptions(api_endpoint=self.endpoint),
        }
