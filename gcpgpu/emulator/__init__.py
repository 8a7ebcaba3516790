"""A local Google Compute Engine v1 emulator for tests, demos and third-party plugin authors.

    from gcpgpu.emulator import Emulator
    with Emulator(latency=0.1) as emu:
        client = compute_v1.InstancesClient(
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=emu.url),  # "http://127.0.0.1:PORT", scheme included
        )

Standard library only; it listens on loopback and never contacts Google.  See ``server`` for the
admin endpoints and ``compute`` for the modelling choices, ``catalog`` for zones and machine types.
"""

from .server import Call, Emulator, serve

__all__ = ["Call", "Emulator", "serve"]
