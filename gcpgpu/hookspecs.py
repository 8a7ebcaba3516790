"""The hooks gcpgpu calls. Plugins implement them with ``@gcpgpu.hookimpl``.

Built-in plugins (``plugins/gcpgpu_plugins``) and third-party packages both register through the
``gcpgpu`` entry-point group, so everything here is the whole contract a plugin needs.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("gcpgpu")


@hookspec
def gcpgpu_schema():
    """Return a JSON Schema fragment to merge into the cluster.yaml schema.

    The fragment is a dict with either or both keys:
    ``"cluster"``: ``{"properties": {...}, "$defs": {...}}`` merged into the top level;
    ``"node_group"``: ``{"properties": {...}, "allOf": [...]}`` merged into every node group
    (``allOf`` if/then rules give defaults that depend on another field).
    An orchestrator plugin adds ``gcpgpu.spec.orchestrator_rule(TYPE, schema)`` to the cluster
    ``allOf``: its keys of ``orchestrator: {type: TYPE, ...}``.
    Give every property a ``description`` and, where there is one, a ``default``: the defaults are
    filled into the loaded spec.
    """


@hookspec
def gcpgpu_validate(spec, base_dir):
    """Check a spec for problems the schema cannot express.

    Return a list of :class:`gcpgpu.errors.Problem` (empty when all is well). Validators run even
    when the schema found problems (the user sees everything at once), so skip values of the
    wrong type. Never call an API here: validation runs before anything is created.
    ``base_dir`` (a :class:`pathlib.Path`) is the cluster file's directory, where relative paths
    in the spec start; implementations that need no files may leave the argument out.
    """


@hookspec
def gcpgpu_register_providers(register):
    """Call ``register(provider)`` for every provider this plugin offers.

    A provider owns one kind of cluster resource; node groups choose it with ``provider: NAME``.
    It must have a ``name`` and implement :class:`gcpgpu.provider.Provider`.
    """


@hookspec
def gcpgpu_host_groups(spec, hosts):
    """Return extra inventory groups as ``{group_name: [host_name, ...]}``.

    ``hosts`` is the list of :class:`gcpgpu.provider.Host` the cluster has now.
    """


@hookspec
def gcpgpu_plays(spec):
    """Return plays to add to the configuration playbook, as a list of dicts.

    Each dict is ``{"name": str, "hosts": str, "roles": [{"role": NAME, "vars": {...}}],
    "order": int}``; plays run in ascending ``order`` (core roles use 10-50).
    A role's ``vars`` are checked against its ``meta/argument_specs.yml`` before anything runs;
    add ``"fields": {variable: "cluster.yaml.path"}`` so a problem names the user's field.
    """


@hookspec
def gcpgpu_commands():
    """Return a list of ``click.Command`` objects to add to the ``gcpgpu`` command line.

    Commands get the shared session with ``@click.pass_obj`` (``session.cluster(path)`` opens a
    cluster); ``gcpgpu.cli`` offers ``spec_argument``, ``configure_hosts`` and ``ssh_argv``.
    Keep Google and Ansible imports inside the command functions: ``gcpgpu --help`` lists them.
    """


@hookspec
def gcpgpu_prices(spec):
    """Return the price items of a cluster, as a list of dicts:

    ``{"group": node group (or e.g. "storage"), "item": what it is, "units": how many,
    "running": $/hour per unit while running, "stopped": $/hour per unit while stopped (disks),
    "per_host": True when a unit is one host of the group (status then counts live hosts)}``.
    """


@hookspec
def gcpgpu_after_configure(cluster, hosts, result):
    """Look at a finished configuration run and return problems a person should act on.

    ``result`` is the :class:`gcpgpu.configure.ConfigureResult`; ``result.custom_stats`` holds
    what roles published with ``ansible.builtin.set_stats`` (``per_host: false``,
    ``aggregate: true``: dicts keyed by host merge across hosts). Return a list of one-line
    strings (empty when all is well); print any report of your own with ``gcpgpu.report.console``.
    Called after every run, also with ``--check``, ``--tags`` or ``--limit``: say nothing when
    your data is absent. ``gcpgpu up`` shows the problems instead of calling the cluster ready.
    """


@hookspec(firstresult=True)
def gcpgpu_state_store(path, project, cluster, clients):
    """Return a store keeping the cluster's state at ``path``, or None when ``path`` is not yours.

    ``path`` is a ``state.path`` with a scheme (e.g. ``gs://bucket/prefix``; a plain path is a
    local directory and never reaches this hook); ``clients`` is the command's
    :class:`gcpgpu.clients.ClientFactory`. A store offers, like :class:`gcpgpu.state.LocalStore`:
    ``remote`` (True), ``where`` (a description for messages), ``read(name) -> str | None``,
    ``write(name, text)``, ``delete(name)``, ``lock(command)`` (a context manager that raises
    :class:`gcpgpu.errors.LockedError` naming the holder, from :func:`gcpgpu.state.holder_line`)
    and ``unlock() -> holder or None`` (removes a lock a dead holder left). Raise
    :class:`gcpgpu.errors.GcpgpuError` when the place cannot be used (e.g. no such bucket),
    before anything is created.
    """


@hookspec
def gcpgpu_state_schemes():
    """Return the ``state.path`` schemes (e.g. ``["gs"]``) your ``gcpgpu_state_store`` serves.

    Validation refuses a ``state.path`` whose scheme no plugin names, without any API call.
    Check the rest of the path (e.g. the bucket name) in ``gcpgpu_validate``.
    """
