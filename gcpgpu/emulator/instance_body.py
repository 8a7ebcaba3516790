"""Validation of Instance / InstanceProperties request bodies, as GCE's insert does it.

``build_instance`` turns a request body into the not-yet-stored InstanceRecord with the
instance JSON GCE would serve, or raises an ApiError (400) with a GCE-like message.
"""

from __future__ import annotations

from . import catalog
from .errors import bad_request, invalid
from .records import ApiRequest, InstanceRecord, int_field
from .resources import (
    LABEL_KEY_PATTERN,
    LABEL_VALUE_PATTERN,
    NAME_PATTERN,
    Links,
    fingerprint,
    new_id,
    parse_reference,
    rfc3339,
)


def check_name(name: str, field_name: str) -> None:
    if not NAME_PATTERN.fullmatch(name or ""):
        raise invalid(
            f"Invalid value for field '{field_name}': '{name}'. "
            "Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'"
        )


def build_instance(request: ApiRequest, zone: str, name: str, props: dict, prefix: str) -> InstanceRecord:
    """Validate an Instance/InstanceProperties body and return the not-yet-stored record."""
    links = request.links
    machine = _resolve_machine_type(zone, props.get("machineType"), prefix)
    gpu_type, gpu_count = _resolve_gpus(zone, machine, props.get("guestAccelerators") or [], prefix)
    scheduling = _scheduling(props.get("scheduling") or {}, gpu_count)
    labels = validate_labels(props.get("labels") or {}, prefix)
    metadata_items = (props.get("metadata") or {}).get("items") or []
    nics, nat_count = _network_interfaces(links, zone, props.get("networkInterfaces") or [{}])
    resource = {
        "kind": "compute#instance",
        "id": new_id(),
        "creationTimestamp": rfc3339(),
        "name": name,
        "description": props.get("description", ""),
        "tags": {"items": (props.get("tags") or {}).get("items", []),
                 "fingerprint": fingerprint((props.get("tags") or {}).get("items", []))},
        "machineType": links.machine_type(zone, machine.name),
        "status": "PROVISIONING",
        "zone": links.zone(zone),
        "canIpForward": bool(props.get("canIpForward", False)),
        "networkInterfaces": nics,
        "disks": _disks(request, zone, name, props.get("disks") or [], prefix),
        "metadata": {"kind": "compute#metadata", "fingerprint": fingerprint(metadata_items),
                     "items": metadata_items},
        "serviceAccounts": props.get("serviceAccounts", []),
        "selfLink": links.instance(zone, name),
        "scheduling": scheduling,
        "cpuPlatform": "Unknown CPU Platform",
        "labels": labels,
        "labelFingerprint": fingerprint(labels),
        "startRestricted": False,
        "deletionProtection": bool(props.get("deletionProtection", False)),
        "shieldedInstanceConfig": props.get("shieldedInstanceConfig")
        or {"enableSecureBoot": False, "enableVtpm": True, "enableIntegrityMonitoring": True},
        "fingerprint": fingerprint([name, zone]),
        "satisfiesPzi": False,
    }
    boot = next(iter(props.get("disks") or []), {})
    image = _resolve_image((boot.get("initializeParams") or {}).get("sourceImage") or "", request.user_images)
    if gpu_count:
        resource["guestAccelerators"] = [
            {"acceleratorType": links.accelerator_type(zone, gpu_type), "acceleratorCount": gpu_count}
        ]
    if props.get("hostname"):
        resource["hostname"] = props["hostname"]
    if not metadata_items:
        del resource["metadata"]["items"]
    return InstanceRecord(
        request.project, zone, resource, gpu_type, gpu_count,
        preemptible=scheduling["preemptible"] or scheduling["provisioningModel"] == "SPOT",
        wants_nat_ips=nat_count, source_image=f"{image.project}/{image.name}" if image else "",
    )


def _resolve_machine_type(zone: str, reference: str | None, prefix: str) -> catalog.MachineTypeSpec:
    if not reference:
        raise invalid(f"Invalid value for field '{prefix}.machineType': ''. Machine type must be specified.")
    parts = parse_reference(reference)
    name = parts.get("machineTypes", parts["name"])
    if parts.get("zones", zone) != zone:
        raise invalid(
            f"Invalid value for field '{prefix}.machineType': '{reference}'. "
            f"Machine type specified '{name}' is in a different zone '{parts['zones']}' than the instance."
        )
    spec = catalog.machine_type_in_zone(zone, name)
    if spec is None:
        raise invalid(
            f"Invalid value for field '{prefix}.machineType': '{reference}'. "
            f"Machine type with name '{name}' does not exist in zone '{zone}'."
        )
    return spec


def _resolve_gpus(zone: str, machine: catalog.MachineTypeSpec, requested: list[dict],
                  prefix: str) -> tuple[str | None, int]:
    if len(requested) > 1:
        raise bad_request("Only one accelerator type per instance is supported.")
    if not requested:
        return machine.bundled_gpu, machine.bundled_gpu_count
    reference = requested[0].get("acceleratorType", "")
    name = parse_reference(reference).get("acceleratorTypes", parse_reference(reference)["name"])
    count = int_field(requested[0].get("acceleratorCount"), f"{prefix}.guestAccelerators[0].acceleratorCount", 1)
    field_name = f"{prefix}.guestAccelerators[0].acceleratorType"
    if name not in catalog.accelerators_in_zone(zone):
        raise invalid(f"Invalid value for field '{field_name}': '{reference}'. "
                      f"Accelerator type '{name}' does not exist in zone '{zone}'.")
    incompatible = bad_request(f"[{machine.name}, {name}] features are not compatible for creating instance.")
    if machine.bundled_gpu:  # A2/A3/G2: may restate their own GPUs, nothing else
        if (name, count) != (machine.bundled_gpu, machine.bundled_gpu_count):
            raise incompatible
        return name, count
    spec = catalog.ACCELERATORS[name]
    if machine.series != "n1" or not spec.n1_counts:
        raise incompatible
    if count not in spec.n1_counts:
        raise invalid(
            f"Invalid value for field '{prefix}.guestAccelerators[0].acceleratorCount': '{count}'. "
            f"Accelerator count of {count} is not valid for accelerator type {name}; "
            f"allowed counts are {sorted(spec.n1_counts)}."
        )
    if machine.guest_cpus > spec.n1_counts[count]:
        raise bad_request(
            f"Number of vCPUs ({machine.guest_cpus}) of machine type {machine.name} exceeds the maximum "
            f"({spec.n1_counts[count]}) supported with {count} {name} accelerator(s)."
        )
    return name, count


def _scheduling(requested: dict, gpu_count: int) -> dict:
    provisioning_model = requested.get("provisioningModel", "STANDARD")
    preemptible = bool(requested.get("preemptible")) or provisioning_model == "SPOT"
    default_maintenance = "TERMINATE" if preemptible else "MIGRATE"
    on_host_maintenance = requested.get("onHostMaintenance") or default_maintenance
    if gpu_count and on_host_maintenance != "TERMINATE":
        raise bad_request("Instances with guest accelerators do not support live migration.")
    scheduling = {
        "onHostMaintenance": on_host_maintenance,
        "automaticRestart": bool(requested.get("automaticRestart", not preemptible)),
        "preemptible": bool(requested.get("preemptible", False)),
        "provisioningModel": provisioning_model,
    }
    if requested.get("instanceTerminationAction"):
        scheduling["instanceTerminationAction"] = requested["instanceTerminationAction"]
    return scheduling


def validate_labels(labels: dict, prefix: str) -> dict:
    for key, value in labels.items():
        if not LABEL_KEY_PATTERN.fullmatch(key) or not LABEL_VALUE_PATTERN.fullmatch(str(value)):
            raise invalid(
                f"Invalid value for field '{prefix}.labels': '{key}={value}'. Label keys must start with a "
                "lowercase letter; keys and values may contain only lowercase letters, digits, '_' and '-', "
                "at most 63 characters."
            )
    return dict(labels)


def _disks(request: ApiRequest, zone: str, instance_name: str, disks: list[dict], prefix: str) -> list:
    if not disks:
        raise invalid(f"Invalid value for field '{prefix}.disks': ''. No disks are specified.")
    links = request.links
    attached = []
    for index, disk in enumerate(disks):
        params = disk.get("initializeParams") or {}
        field_name = f"{prefix}.disks[{index}].initializeParams"
        size = _disk_size(params, field_name, request.user_images)
        disk_name = params.get("diskName") or (instance_name if index == 0 else f"{instance_name}-{index}")
        entry = {
            "kind": "compute#attachedDisk",
            "type": disk.get("type", "PERSISTENT"),
            "mode": disk.get("mode", "READ_WRITE"),
            "source": disk.get("source") and links.expand(disk["source"]) or links.disk(zone, disk_name),
            "deviceName": disk.get("deviceName") or f"persistent-disk-{index}",
            "index": index,
            "boot": bool(disk.get("boot", index == 0)),
            "autoDelete": bool(disk.get("autoDelete", False)),
            "interface": disk.get("interface", "SCSI"),
            "diskSizeGb": str(size),
            "architecture": "X86_64",
        }
        attached.append(entry)
    return attached


def _disk_size(params: dict, field_name: str, user_images: list) -> int:
    image_size = 10
    source_image = params.get("sourceImage")
    if source_image:
        image = _resolve_image(source_image, user_images)
        if image is None:
            raise invalid(f"Invalid value for field '{field_name}.sourceImage': '{source_image}'. "
                          "The referenced image resource cannot be found.")
        image_size = image.disk_size_gb
    size = int_field(params.get("diskSizeGb"), f"{field_name}.diskSizeGb", image_size)
    if size < image_size:
        raise invalid(f"Invalid value for field '{field_name}.diskSizeGb': '{size}'. Requested disk size "
                      f"cannot be smaller than the image size ({image_size} GB)")
    return size


def _resolve_image(reference: str, user_images: list) -> catalog.ImageSpec | None:
    """A public image of the catalogue or one made with images.insert (a family: its newest)."""
    if not reference:
        return None
    parts = parse_reference(reference)
    project = parts.get("projects", "")
    for image in reversed(user_images):
        if image.project == project and (image.family == parts.get("family") or
                                         image.name == parts.get("images", parts.get("name"))):
            return image
    if "family" in parts:
        return catalog.find_image_family(project, parts["family"])
    return catalog.find_image(project, parts.get("images", parts["name"]))


def _network_interfaces(links: Links, zone: str, requested: list[dict]) -> tuple[list[dict], int]:
    region = catalog.region_of(zone)
    nics, nat_count = [], 0
    for index, nic in enumerate(requested):
        network = links.expand(nic.get("network") or "global/networks/default")
        subnetwork = nic.get("subnetwork") or f"regions/{region}/subnetworks/{parse_reference(network)['name']}"
        entry = {
            "kind": "compute#networkInterface",
            "network": network,
            "subnetwork": links.expand(subnetwork),
            "networkIP": "",  # assigned when the instance is created
            "name": f"nic{index}",
            "fingerprint": fingerprint(["nic", index]),
            "stackType": nic.get("stackType", "IPV4_ONLY"),
        }
        if nic.get("nicType"):
            entry["nicType"] = nic["nicType"]
        if nic.get("accessConfigs"):
            entry["accessConfigs"] = [
                {"kind": "compute#accessConfig", "type": "ONE_TO_ONE_NAT",
                 "name": config.get("name", "External NAT"), "natIP": config.get("natIP", ""),
                 "networkTier": config.get("networkTier", "PREMIUM")}
                for config in nic["accessConfigs"]
            ]
            nat_count += sum(1 for c in nic["accessConfigs"] if not c.get("natIP"))
        nics.append(entry)
    return nics, nat_count
