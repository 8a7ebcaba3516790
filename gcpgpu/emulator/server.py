"""The HTTP face of the emulator: the ``Emulator`` object, its admin endpoints and ``serve()``.

Point a google-cloud-compute client at it with the scheme included::

    compute_v1.InstancesClient(
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=emu.url),  # "http://127.0.0.1:PORT"
    )

(Without a scheme the REST transport assumes https.)  Admin endpoints, not recorded in
``calls``, let a separate process drive a standalone server::

    GET  /_emulator/calls            -> {"calls": [{methodId, httpMethod, path, zone, mutating, status}]}
    GET  /_emulator/instances        -> {"instances": [...]}
    POST /_emulator/reset_calls
    POST /_emulator/faults           {"method", "code", "zone"?, "times"?, "http_status"?, "message"?}
    POST /_emulator/capacity         {"zone", "accelerator_type", "gpus"}
    POST /_emulator/quota            {"region", "metric", "limit"}
    POST /_emulator/preempt          {"zone", "name", "project"?}  -> the preemption operation
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from .compute import ApiRequest, ComputeState
from .errors import ApiError
from .routes import match_route
from .services import build_services

ADMIN_PREFIX = "/_emulator/"
TICK_SECONDS = 0.01


@dataclass(frozen=True)
class Call:
    method_id: str  # discovery id, e.g. "compute.instances.bulkInsert"; "unknown" if no route matched
    http_method: str
    path: str
    zone: str | None
    mutating: bool
    status: int


@dataclass(frozen=True)
class Media:
    """A body that is not JSON, both ways. A request whose Content-Type is not JSON, or one sent
    to an ``/upload/`` path, reaches the services as a Media (a Cloud Storage upload); a service
    answers raw bytes (a download, or an empty 204) by returning one as its payload."""

    data: bytes
    content_type: str = "application/octet-stream"
    headers: dict = field(default_factory=dict)  # extra response headers, e.g. X-Goog-Generation


class Emulator:
    """An in-process Compute Engine v1 emulator served over plain HTTP on loopback."""

    def __init__(self, latency: float = 3.0, project: str | None = None):
        self.state = ComputeState(latency=latency, project=project)
        self._calls: list[Call] = []
        self._calls_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.url: str | None = None
        self.services = build_services(self)

    # ------------------------------------------------------------------ lifecycle

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._server is not None:
            raise RuntimeError("emulator already started")
        self._server = _Server((host, port), _Handler)
        self._server.emulator = self
        bound_host, bound_port = self._server.server_address[:2]
        self.url = f"http://{bound_host}:{bound_port}"
        self._stopping.clear()
        self._threads = [
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                             name="gcpgpu-emulator-http", daemon=True),
            threading.Thread(target=self._tick, name="gcpgpu-emulator-ticker", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> "Emulator":
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _tick(self) -> None:
        # Fires operation effects (e.g. binder.release on delete) even when nobody polls.
        while not self._stopping.wait(TICK_SECONDS):
            self.state.advance()
            for service in self.services:
                service.advance()

    # ------------------------------------------------------------------- calls

    @property
    def calls(self) -> list[Call]:
        with self._calls_lock:
            return list(self._calls)

    def count(self, method: str | None = None, mutating: bool | None = None) -> int:
        return sum(
            1 for c in self.calls
            if method in (None, c.method_id) and mutating in (None, c.mutating)
        )

    def reset_calls(self) -> None:
        with self._calls_lock:
            self._calls.clear()

    def _record(self, call: Call) -> None:
        with self._calls_lock:
            self._calls.append(call)

    # --------------------------------------------------------- test controls

    def set_capacity(self, zone: str, accelerator_type: str, gpus: int) -> None:
        self.state.set_capacity(zone, accelerator_type, gpus)

    def set_quota(self, region: str, metric: str, limit: float) -> None:
        self.state.set_quota(region, metric, limit)

    def inject_fault(self, method: str, code: str, zone: str | None = None, times: int = 1,
                     http_status: int | None = None, message: str | None = None) -> None:
        """Make the next ``times`` calls of ``method`` (in ``zone``, or any zone) fail.

        With ``http_status`` the HTTP call fails with a Google error body (reason=code) and nothing
        happens.  Without it a mutating call returns an operation that ends DONE with
        error.errors[0].code=code (httpErrorStatusCode 503 for stockouts), and nothing is created;
        a read-only call, which has no operation, fails with HTTP 503. Filestore and Cloud Storage
        methods (``zone`` = the location for Filestore) always fail the HTTP call.
        """
        self.state.inject_fault(method, code, zone=zone, times=times, http_status=http_status, message=message)

    def preempt(self, zone: str, name: str, project: str | None = None) -> dict:
        return self.state.preempt(zone, name, project)

    def bind_nodes(self, binder) -> None:
        """binder.acquire(name, instance) -> ip on create; binder.release(name) on delete.

        Both are called with the emulator's lock held (so an instance is never visible without its
        IP): they must not call back into the emulator over HTTP.  acquire runs while the insert
        request is served; release when the delete operation is DONE (from any thread).  If acquire
        raises, the instances of that request are rolled back and the call fails with HTTP 500.
        """
        with self.state.lock:
            self.state.binder = binder

    def instances(self, project: str | None = None) -> list[dict]:
        return self.state.instance_snapshots(project)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: Emulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the google clients reuse connections
    server: _Server

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_DELETE(self):
        self._serve("DELETE")

    def do_PATCH(self):
        self._serve("PATCH")

    def do_PUT(self):
        self._serve("PUT")

    def log_message(self, format, *args):  # noqa: A002 - quiet by default
        pass

    # ------------------------------------------------------------------------

    def _serve(self, http_method: str) -> None:
        parts = urlsplit(self.path)
        body = self._read_body()
        if parts.path.startswith(ADMIN_PREFIX):
            status, payload = _admin(self.server.emulator, http_method, parts.path[len(ADMIN_PREFIX):], body)
            self._send(status, payload)
            return
        status, payload, call = self._api(http_method, parts.path, dict(parse_qsl(parts.query)), body)
        self.server.emulator._record(call)  # before answering, so a caller's next look sees it
        self._send(status, payload)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _api(self, http_method: str, path: str, query: dict, raw_body: bytes) -> tuple[int, dict, Call]:
        content_type = self.headers.get("Content-Type") or ""
        for service in self.server.emulator.services:
            try:
                body = _request_body(raw_body, content_type, path)
            except json.JSONDecodeError as error:
                return 400, ApiError(400, "parseError", str(error)).body(), Call(
                    "unknown", http_method, path, None, http_method != "GET", 400)
            served = service.serve(http_method, path, query, body, self._base_url())
            if served is not None:
                return served
        routed = match_route(http_method, path)
        if routed is None:
            error = ApiError(404, "notFound", f"The requested URL {path} was not found on this server.")
            return 404, error.body(), Call("unknown", http_method, path, None, http_method != "GET", 404)
        route, params = routed
        try:
            body = json.loads(raw_body) if raw_body.strip() else {}
            request = ApiRequest(route.method_id, params["project"], params, query, body, self._base_url())
            status, payload = self.server.emulator.state.handle(route, request)
        except ApiError as error:
            status, payload = error.http_status, error.body()
        except json.JSONDecodeError as error:
            status, payload = 400, ApiError(400, "parseError", f"Invalid JSON payload received. {error}").body()
        call = Call(route.method_id, http_method, path, params.get("zone"), route.mutating, status)
        return status, payload, call

    def _base_url(self) -> str:
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        return f"http://{host}"

    def _send(self, status: int, payload) -> None:
        if not isinstance(payload, Media):
            payload = Media(json.dumps(payload).encode(), "application/json; charset=UTF-8")
        self.send_response(status)
        if status != 204:  # No Content: no body, no type
            self.send_header("Content-Type", payload.content_type)
        for name, value in payload.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload.data)))
        self.end_headers()
        self.wfile.write(payload.data)


def _request_body(raw_body: bytes, content_type: str, path: str):
    """Decoded JSON ({} when empty), or a Media: a body whose Content-Type is not JSON, or any
    body sent to Google's media upload paths (``/upload/...``: the data may be JSON text)."""
    if not raw_body.strip() and not path.startswith("/upload/"):
        return {}
    if path.startswith("/upload/") or (content_type and "json" not in content_type.lower()):
        return Media(raw_body, content_type)
    return json.loads(raw_body)


def _admin(emulator: Emulator, http_method: str, action: str, raw_body: bytes) -> tuple[int, dict]:
    required = {"faults": ("method", "code"), "capacity": ("zone", "gpus"),
                "quota": ("region", "metric", "limit"), "preempt": ("zone", "name")}
    try:
        body = json.loads(raw_body) if raw_body.strip() else {}
        missing = [key for key in required.get(action, ()) if key not in body]
        if http_method == "POST" and missing:
            return 400, {"error": f"missing fields: {', '.join(missing)}"}
        if http_method == "GET" and action == "calls":
            return 200, {"calls": [_call_json(c) for c in emulator.calls]}
        if http_method == "GET" and action == "instances":
            return 200, {"instances": emulator.instances(body.get("project"))}
        if http_method != "POST":
            return 404, {"error": f"unknown admin endpoint {http_method} {action}"}
        if action == "reset_calls":
            emulator.reset_calls()
        elif action == "faults":
            emulator.inject_fault(body["method"], body["code"], zone=body.get("zone"),
                                  times=body.get("times", 1), http_status=body.get("http_status"),
                                  message=body.get("message"))
        elif action == "capacity":
            accelerator_type = body.get("accelerator_type") or body.get("acceleratorType")
            if not accelerator_type:
                return 400, {"error": "missing fields: accelerator_type"}
            emulator.set_capacity(body["zone"], accelerator_type, body["gpus"])
        elif action == "quota":
            emulator.set_quota(body["region"], body["metric"], body["limit"])
        elif action == "preempt":
            return 200, emulator.preempt(body["zone"], body["name"], body.get("project"))
        else:
            return 404, {"error": f"unknown admin endpoint {http_method} {action}"}
        return 200, {}
    except KeyError as error:  # preempt of an instance that does not exist
        return 404, {"error": str(error)}
    except (ValueError, TypeError) as error:
        return 400, {"error": str(error)}


def _call_json(call: Call) -> dict:
    fields = asdict(call)
    return {"methodId": fields["method_id"], "httpMethod": fields["http_method"], "path": fields["path"],
            "zone": fields["zone"], "mutating": fields["mutating"], "status": fields["status"]}


def serve(host: str = "127.0.0.1", port: int = 8085, latency: float = 3.0, project: str | None = None,
          quiet: bool = False) -> None:
    """Run the emulator in the foreground until Ctrl-C (used by ``gcpgpu emulator``)."""
    emulator = Emulator(latency=latency, project=project)
    url = emulator.start(host=host, port=port)
    if not quiet:
        print(f"Compute Engine emulator listening on {url}  (api_endpoint={url!r}; Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
