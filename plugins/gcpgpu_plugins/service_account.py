"""The `service_account` plugin: one service account per cluster, with only the project roles its
features need, attached to its VMs (cloud-platform scope; roles, not scopes, limit it).

Never the default compute service account (Editor on the whole project) and never a key: the VMs
get tokens from the metadata server. The account's description carries ``gcpgpu-cluster=<name>``
(accounts have no labels). Project roles are changed by read-modify-write of the project's IAM
policy (getIamPolicy, then setIamPolicy with its etag), retried when someone else changed it in
between; only this account's membership in its own roles is ever added or removed.

google-cloud-iam's admin client speaks gRPC only, and gcpgpu sends every API to one HTTP
endpoint (Google or the emulator), so the four IAM calls used here go through ``IamClient``, a
small REST client built by the same client factory (``ctx.clients.get(IamClient)``).
"""
from __future__ import annotations

from gcpgpu.errors import GcpgpuError
from gcpgpu.plugins import hookimpl
from gcpgpu.provider import Context, Resource
from gcpgpu_plugins.gcp import digest, is_transient, service_account_email

VM_PROVIDERS = {"compute", "mig"}  # their VMs run as the cluster's account

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
OPS_AGENT_ROLES = ("roles/logging.logWriter", "roles/monitoring.metricWriter")
IAM_ENDPOINT = "https://iam.googleapis.com"
ACCOUNT, BINDING = "service-account", "iam-binding"
POLICY_VERSION = 3  # keeps conditional bindings intact when the policy is written back

SCHEMA = {
    "service_account": {
        "title": "Service account",
        "description": "The cluster's own service account (gcpgpu-<name>@<project>.iam."
                       "gserviceaccount.com), attached to every VM. It gets the roles the "
                       "cluster's features need (log and metric writer for the Ops Agent; bucket "
                       "access from the storage plugin) plus extra_roles.",
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "properties": {
            "extra_roles": {
                "type": "array", "items": {"type": "string", "pattern": "^(roles|projects/[^/]+/roles)/[A-Za-z0-9_.]+$"},
                "uniqueItems": True, "default": [],
                "description": "More project roles for the account, e.g. roles/artifactregistry.reader."},
        },
    },
}


def roles(spec: dict) -> list[str]:
    """Project roles of the cluster's account: the Ops Agent's unless it is turned off, plus extras."""
    ops_agent = spec.get("ops_agent", True)
    enabled = ops_agent.get("enabled", True) if isinstance(ops_agent, dict) else ops_agent is not False
    found = list(OPS_AGENT_ROLES) if enabled else []
    extra = (spec.get("service_account") or {}).get("extra_roles", [])
    return found + [r for r in extra if r not in found]


def instance_service_accounts(spec: dict) -> list[dict]:
    """The ``serviceAccounts`` of every VM of the cluster."""
    return [{"email": service_account_email(spec), "scopes": [CLOUD_PLATFORM]}]


def marker(cluster: str) -> str:
    return f"gcpgpu-cluster={cluster}"


def member(spec: dict) -> str:
    return f"serviceAccount:{service_account_email(spec)}"


# -- a small IAM REST client ----------------------------------------------------------------------

class IamClient:
    """serviceAccounts create/get/delete over REST, with GAPIC-like construction
    (``credentials``, ``client_options.api_endpoint``) so the client factory can build it."""

    def __init__(self, credentials=None, client_options=None):
        from google.auth.transport.requests import AuthorizedSession

        if credentials is None:
            import google.auth

            credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM])
        endpoint = getattr(client_options, "api_endpoint", None) or IAM_ENDPOINT
        self.base = endpoint.rstrip("/") + "/v1"
        self.session = AuthorizedSession(credentials)

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        from google.api_core import exceptions

        response = self.session.request(method, f"{self.base}/{path}", json=body, timeout=60)
        if response.status_code >= 400:
            raise exceptions.from_http_response(response)
        return response.json() if response.content else {}

    def create(self, project: str, account_id: str, display_name: str, description: str) -> dict:
        return self._call("POST", f"projects/{project}/serviceAccounts", {
            "accountId": account_id,
            "serviceAccount": {"displayName": display_name, "description": description}})

    def get(self, project: str, email: str) -> dict:
        return self._call("GET", f"projects/{project}/serviceAccounts/{email}")

    def delete(self, project: str, email: str) -> None:
        self._call("DELETE", f"projects/{project}/serviceAccounts/{email}")


# -- retries --------------------------------------------------------------------------------------

def _policy_retryable(exc: Exception) -> bool:
    """Transient errors, a concurrent policy change (409 ABORTED on a stale etag), and a freshly
    made account IAM does not know yet (400 "... does not exist", for up to a minute)."""
    from google.api_core import exceptions

    if isinstance(exc, (exceptions.Conflict, exceptions.Aborted)):
        return True
    if isinstance(exc, exceptions.BadRequest) and "does not exist" in str(exc):
        return True
    return is_transient(exc)


def _retry(predicate=is_transient):
    from google.api_core.retry import Retry

    return Retry(predicate=predicate, initial=1.0, maximum=30.0, multiplier=2.0, timeout=300.0)


# -- the provider ---------------------------------------------------------------------------------

class ServiceAccountProvider:
    name = "service_account"

    def __init__(self):
        # The project policy `observe` read, {project: policy}: the first read-modify-write of the
        # same command starts from it instead of reading again (its etag makes a stale one fail
        # with 409, and the retry reads afresh).
        self._observed_policy: dict[str, object] = {}

    def desired(self, spec: dict, group_name: str, group: dict) -> list[Resource]:
        return []

    def cluster_resources(self, spec: dict) -> list[Resource]:
        if not any(g.get("provider") in VM_PROVIDERS for g in spec["node_groups"].values()):
            return []  # no VM of ours to attach it to (existing machines, GKE only)
        email = service_account_email(spec)
        account = Resource(provider=self.name, kind=ACCOUNT, name=email, group="", location="global",
                           digest=digest({"email": email}), stage=20)
        return [account] + [self._binding(spec["project"], email, role) for role in roles(spec)]

    def _binding(self, project: str, email: str, role: str, status: str = "") -> Resource:
        return Resource(provider=self.name, kind=BINDING, name=role, group="", location=project,
                        digest=digest({"role": role, "member": f"serviceAccount:{email}"}),
                        stage=21, status=status)

    def observe(self, ctx: Context) -> list[Resource]:
        from google.api_core import exceptions

        email = service_account_email(ctx.spec)
        found = []
        try:
            account = ctx.clients.get(IamClient).get(ctx.project, email)
            if account.get("description", "").split(" ", 1)[0] == marker(ctx.cluster):
                found.append(Resource(provider=self.name, kind=ACCOUNT, name=email, group="",
                                      location="global", digest=digest({"email": email}),
                                      status="ENABLED" if not account.get("disabled") else "DISABLED",
                                      body=account, stage=20))
        except exceptions.NotFound:
            pass
        policy = self._observed_policy[ctx.project] = self._policy(ctx)
        for binding in policy.bindings:
            if f"serviceAccount:{email}" in binding.members and not binding.condition.expression:
                found.append(self._binding(ctx.project, email, binding.role, status="BOUND"))
        return found

    def create(self, ctx: Context, resources: list[Resource]) -> None:
        if resources[0].kind == ACCOUNT:
            self._create_account(ctx)
        else:
            self._change_roles(ctx, add={r.name for r in resources})
        ctx.progress(len(resources))

    def delete(self, ctx: Context, resources: list[Resource]) -> None:
        from google.api_core import exceptions

        if resources[0].kind == ACCOUNT:
            try:
                ctx.clients.get(IamClient).delete(ctx.project, resources[0].name)
            except exceptions.NotFound:
                pass
        else:
            self._change_roles(ctx, remove={r.name for r in resources})
        ctx.progress(len(resources))

    def _create_account(self, ctx: Context) -> None:
        from google.api_core import exceptions

        email = service_account_email(ctx.spec)
        client = ctx.clients.get(IamClient)
        try:
            _retry()(client.create)(ctx.project, email.split("@")[0], f"gcpgpu cluster {ctx.cluster}",
                                    f"{marker(ctx.cluster)} (made by gcpgpu; `gcpgpu down` deletes it)")
        except exceptions.Conflict:  # exists: ours from a killed run, or someone else's
            existing = client.get(ctx.project, email)
            if existing.get("description", "").split(" ", 1)[0] != marker(ctx.cluster):
                raise GcpgpuError(f"service account {email} exists but is not marked "
                                  f"{marker(ctx.cluster)}; delete it or rename the cluster") from None

    def _policy(self, ctx: Context):
        from google.cloud import resourcemanager_v3

        client = ctx.clients.get(resourcemanager_v3.ProjectsClient, transport="rest")
        return client.get_iam_policy(request={"resource": f"projects/{ctx.project}",
                                              "options": {"requested_policy_version": POLICY_VERSION}},
                                     retry=_retry())

    def _change_roles(self, ctx: Context, add: set[str] = frozenset(), remove: set[str] = frozenset()):
        """getIamPolicy -> change this account's membership -> setIamPolicy with the etag read;
        the whole round is retried when the etag went stale."""
        from google.cloud import resourcemanager_v3

        client = ctx.clients.get(resourcemanager_v3.ProjectsClient, transport="rest")
        who = member(ctx.spec)

        def round_trip():
            policy = self._observed_policy.pop(ctx.project, None) or self._policy(ctx)
            if not _edit(policy, who, add, remove):
                return
            policy.version = POLICY_VERSION
            client.set_iam_policy(request={"resource": f"projects/{ctx.project}", "policy": policy})

        _retry(_policy_retryable)(round_trip)()


def _edit(policy, who: str, add: set[str], remove: set[str]) -> bool:
    """Add ``who`` to the unconditional bindings of ``add`` and take it out of those of
    ``remove``, dropping bindings left empty. True if anything changed."""
    changed = False
    plain = {b.role: b for b in policy.bindings if not b.condition.expression}
    for role in sorted(add):
        binding = plain.get(role)
        if binding is None:
            policy.bindings.add(role=role, members=[who])
            changed = True
        elif who not in binding.members:
            binding.members.append(who)
            changed = True
    for role in remove:
        binding = plain.get(role)
        if binding is not None and who in binding.members:
            binding.members.remove(who)
            changed = True
    for i in reversed(range(len(policy.bindings))):
        if not policy.bindings[i].members:
            del policy.bindings[i]
    return changed


@hookimpl
def gcpgpu_schema():
    return {"cluster": {"properties": SCHEMA}}


@hookimpl
def gcpgpu_register_providers(register):
    register(ServiceAccountProvider())
