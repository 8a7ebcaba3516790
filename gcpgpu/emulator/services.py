"""Google APIs the emulator serves besides Compute Engine (GKE, Filestore, Cloud Storage, IAM...).

A service is an object built with the ``Emulator`` (it may use ``emulator.state``: its lock,
latency, operations and instances) and offering::

    serve(http_method, path, query, body, base_url) -> (status, payload, Call) | None
        None when the path is not this service's; body is the decoded JSON (or {}).
    advance() -> None
        called on every emulator tick (finish operations whose time has come).

Add a service by listing its factory here; it is tried before the Compute routes.
"""
from __future__ import annotations

from typing import Callable


def _compute_networks(emulator):
    from .compute_networks import ComputeNetworks

    return ComputeNetworks(emulator)


def _iam(emulator):
    from .iam import IamService

    return IamService(emulator)


def _filestore(emulator):
    from .filestore import FilestoreService  # imported late: it uses server.Call

    return FilestoreService(emulator)


def _storage(emulator):
    from .storage import StorageService

    return StorageService(emulator)


def _gke(emulator):
    from .gke import GkeService

    return GkeService(emulator)


SERVICE_FACTORIES: list[Callable] = [_compute_networks, _iam, _filestore, _storage, _gke]


def build_services(emulator) -> list:
    return [factory(emulator) for factory in SERVICE_FACTORIES]
