"""A provider whose machines are JSON files in $GCPGPU_LOCALFILE_DIR: a third-party plugin
exercising the same hooks and entry-point group as the built-in ones."""
import json
import os
from pathlib import Path

from gcpgpu import hookimpl
from gcpgpu.errors import Problem
from gcpgpu.provider import Host, Resource


def machines_dir() -> Path:
    path = Path(os.environ["GCPGPU_LOCALFILE_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


class LocalFileProvider:
    name = "localfile"

    def desired(self, spec, group_name, group):
        return [Resource(provider=self.name, kind="file", name=f"{spec['name']}-{group_name}-{i}",
                         group=group_name, location="local", digest=group["flavour"])
                for i in range(group["count"])]

    def observe(self, ctx):
        found = []
        for path in sorted(machines_dir().glob(f"{ctx.cluster}-*.json")):
            data = json.loads(path.read_text())
            found.append(Resource(provider=self.name, kind="file", name=path.stem,
                                  group=data["group"], location="local", digest=data["flavour"],
                                  status="RUNNING"))
        return found

    def create(self, ctx, resources):
        for r in resources:
            (machines_dir() / f"{r.name}.json").write_text(
                json.dumps({"group": r.group, "flavour": r.digest}))
            ctx.progress(1)

    def delete(self, ctx, resources):
        for r in resources:
            (machines_dir() / f"{r.name}.json").unlink(missing_ok=True)
            ctx.progress(1)

    def hosts(self, ctx, live):
        return [Host(name=r.name, group=r.group, address="127.0.0.1", status=r.status) for r in live]


@hookimpl
def gcpgpu_schema():
    return {"node_group": {"properties": {"flavour": {
        "type": "string", "default": "vanilla", "description": "localfile: a made-up setting"}}}}


@hookimpl
def gcpgpu_validate(spec):
    return [Problem(f"node_groups.{name}.flavour", "flavour 'mud' is not allowed", "use 'vanilla'")
            for name, group in spec["node_groups"].items() if group.get("flavour") == "mud"]


@hookimpl
def gcpgpu_register_providers(register):
    register(LocalFileProvider())
