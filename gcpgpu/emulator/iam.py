"""IAM service accounts and Resource Manager project IAM policies, as an emulator service.

Paths and JSON as the REST APIs serve them:
    POST   /v1/projects/{p}/serviceAccounts              {accountId, serviceAccount{displayName, description}}
    GET    /v1/projects/{p}/serviceAccounts[/{email}]    list -> {"accounts": [...], "nextPageToken"?}
    DELETE /v1/projects/{p}/serviceAccounts/{email}      -> {}
    POST   /v3/projects/{p}:getIamPolicy                 {options{requestedPolicyVersion}}
    POST   /v3/projects/{p}:setIamPolicy                 {policy{version, etag, bindings}, updateMask?}

Modelled because callers depend on it: 409 ALREADY_EXISTS for an existing account id; 404 for an
unknown account; account ids of 6-30 characters; policy etags that change on every write and a
409 ABORTED for a write carrying a stale etag (a write without etag overwrites); a member naming a
service account of this project that does not exist is refused (400, as IAM does); deleting an
account turns its memberships into ``deleted:serviceAccount:{email}?uid={uniqueId}``. Every call
is immediate (these APIs have no long-running operations here).
"""
from __future__ import annotations

import base64
import copy
import re

from .resources import new_id

ACCOUNTS = re.compile(r"^/v1/projects/(?P<project>[^/]+)/serviceAccounts(?:/(?P<email>[^/]+))?$")
POLICY = re.compile(r"^/v3/projects/(?P<project>[^/:]+):(?P<verb>getIamPolicy|setIamPolicy)$")
ACCOUNT_ID = re.compile(r"^[a-z]([-a-z0-9]{4,28}[a-z0-9])$")
STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 409: "ALREADY_EXISTS"}


class IamError(Exception):
    def __init__(self, code: int, message: str, status: str | None = None):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status or STATUS.get(code, "UNKNOWN")

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}


class IamService:
    def __init__(self, emulator):
        self.lock = emulator.state.lock
        self.accounts: dict[tuple[str, str], dict] = {}  # (project, email) -> account JSON
        self.policies: dict[str, dict] = {}  # project -> {"version", "bindings", "etag"}
        self.writes = 0

    def advance(self) -> None:
        pass

    def serve(self, http_method: str, path: str, query: dict, body: dict, base_url: str):
        from .server import Call

        routed = self._route(http_method, path)
        if routed is None:
            return None
        method_id, handler, params, mutating = routed
        try:
            with self.lock:
                status, payload = 200, handler(params, query, body)
        except IamError as error:
            status, payload = error.code, error.body()
        return status, payload, Call(method_id, http_method, path, None, mutating, status)

    def _route(self, http_method: str, path: str):
        if found := ACCOUNTS.match(path):
            params = found.groupdict()
            single = params["email"] is not None
            table = {("POST", False): ("create", self.create, True), ("GET", False): ("list", self.list, False),
                     ("GET", True): ("get", self.get, False), ("DELETE", True): ("delete", self.delete, True)}
            if (http_method, single) in table:
                verb, handler, mutating = table[(http_method, single)]
                return f"iam.projects.serviceAccounts.{verb}", handler, params, mutating
        if (found := POLICY.match(path)) and http_method == "POST":
            params = found.groupdict()
            handler = self.get_policy if params["verb"] == "getIamPolicy" else self.set_policy
            return (f"cloudresourcemanager.projects.{params['verb']}", handler, params,
                    params["verb"] == "setIamPolicy")
        return None

    # ------------------------------------------------------------------ service accounts

    def create(self, params: dict, query: dict, body: dict) -> dict:
        project, account_id = params["project"], body.get("accountId", "")
        if not ACCOUNT_ID.match(account_id):
            raise IamError(400, f"Invalid account id '{account_id}': 6-30 characters of lowercase "
                                "letters, digits and hyphens, starting with a letter.")
        email = f"{account_id}@{project}.iam.gserviceaccount.com"
        if (project, email) in self.accounts:
            raise IamError(409, f"Service account {account_id} already exists within project "
                                f"projects/{project}.")
        given = body.get("serviceAccount") or {}
        unique_id = str(int(new_id()) % 10**21)
        account = {"name": f"projects/{project}/serviceAccounts/{email}", "projectId": project,
                   "uniqueId": unique_id, "email": email, "displayName": given.get("displayName", ""),
                   "description": given.get("description", ""), "etag": base64.b64encode(b"\0").decode(),
                   "oauth2ClientId": unique_id}
        self.accounts[(project, email)] = account
        return copy.deepcopy(account)

    def _account(self, params: dict) -> dict:
        key = (params["project"], params["email"])
        if key not in self.accounts:
            raise IamError(404, f"Unknown service account: projects/{params['project']}/serviceAccounts/"
                                f"{params['email']}")
        return self.accounts[key]

    def get(self, params: dict, query: dict, body: dict) -> dict:
        return copy.deepcopy(self._account(params))

    def list(self, params: dict, query: dict, body: dict) -> dict:
        found = [copy.deepcopy(a) for (project, _), a in sorted(self.accounts.items()) if project == params["project"]]
        return {"accounts": found} if found else {}

    def delete(self, params: dict, query: dict, body: dict) -> dict:
        account = self._account(params)
        del self.accounts[(params["project"], params["email"])]
        for policy in self.policies.values():
            for binding in policy["bindings"]:
                binding["members"] = [f"deleted:serviceAccount:{account['email']}?uid={account['uniqueId']}"
                                      if m == f"serviceAccount:{account['email']}" else m
                                      for m in binding["members"]]
        return {}

    # -------------------------------------------------------------------- IAM policies

    def _policy(self, project: str) -> dict:
        if project not in self.policies:
            self.policies[project] = {"version": 1, "etag": self._etag(), "bindings": [
                {"role": "roles/owner", "members": [f"user:owner@{project}.example.com"]}]}
        return self.policies[project]

    def _etag(self) -> str:
        self.writes += 1
        return base64.b64encode(f"etag-{self.writes}".encode()).decode()

    def get_policy(self, params: dict, query: dict, body: dict) -> dict:
        return _served(self._policy(params["project"]))

    def set_policy(self, params: dict, query: dict, body: dict) -> dict:
        project = params["project"]
        current, given = self._policy(project), body.get("policy") or {}
        if given.get("etag") and given["etag"] != current["etag"]:
            raise IamError(409, "There were concurrent policy changes. Please retry the whole "
                                "read-modify-write with exponential backoff.", "ABORTED")
        bindings = [{"role": b["role"], "members": list(b.get("members", [])),
                     **({"condition": b["condition"]} if b.get("condition") else {})}
                    for b in given.get("bindings", [])]
        for binding in bindings:
            if not binding["members"]:
                raise IamError(400, f"Binding for role {binding['role']} has no members.")
            for member in binding["members"]:
                self._check_member(project, member)
        self.policies[project] = {"version": int(given.get("version") or 1), "etag": self._etag(),
                                  "bindings": bindings}
        return _served(self.policies[project])

    def _check_member(self, project: str, member: str) -> None:
        kind, _, email = member.partition(":")
        ours = email.endswith(f"@{project}.iam.gserviceaccount.com")
        if kind == "serviceAccount" and ours and (project, email) not in self.accounts:
            raise IamError(400, f"Service account {email} does not exist.")


def _served(policy: dict) -> dict:
    body = {"version": policy["version"], "etag": policy["etag"]}
    if policy["bindings"]:
        body["bindings"] = copy.deepcopy(policy["bindings"])
    return body
