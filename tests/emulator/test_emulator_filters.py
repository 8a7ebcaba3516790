"""List filter expressions, evaluated without a server."""

from __future__ import annotations

import pytest

from gcpgpu.emulator.errors import ApiError
from gcpgpu.emulator.filters import compile_filter

A = {"name": "gpu-1", "status": "RUNNING", "labels": {"gcpgpu-cluster": "demo", "role": "head"},
     "zone": "http://h/compute/v1/projects/p/zones/us-central1-a", "scheduling": {"preemptible": True}}
B = {"name": "gpu-2", "status": "TERMINATED", "labels": {"gcpgpu-cluster": "demo"},
     "zone": "http://h/compute/v1/projects/p/zones/us-east1-b", "scheduling": {"preemptible": False}}
C = {"name": "web", "status": "RUNNING", "labels": {}, "zone": "http://h/compute/v1/projects/p/zones/us-east1-b"}


def matching(expression: str) -> list[str]:
    predicate = compile_filter(expression)
    return [item["name"] for item in (A, B, C) if predicate(item)]


@pytest.mark.parametrize("expression, names", [
    ("", ["gpu-1", "gpu-2", "web"]),
    ('labels.gcpgpu-cluster = "demo"', ["gpu-1", "gpu-2"]),
    ("labels.gcpgpu-cluster=demo", ["gpu-1", "gpu-2"]),
    ('name = "web"', ["web"]),
    ("status = RUNNING", ["gpu-1", "web"]),
    ("status != RUNNING", ["gpu-2"]),
    ('(labels.gcpgpu-cluster = "demo") (status = RUNNING)', ["gpu-1"]),
    ('(labels.gcpgpu-cluster = "demo") AND (status != RUNNING)', ["gpu-2"]),
    ("(status = TERMINATED) OR (name = web)", ["gpu-2", "web"]),
    ("NOT (status = RUNNING)", ["gpu-2"]),
    ("labels.role:*", ["gpu-1"]),
    ("zone = us-east1-b", ["gpu-2", "web"]),
    ('name = "gpu-*"', ["gpu-1", "gpu-2"]),
    ("name eq gpu-.*", ["gpu-1", "gpu-2"]),
    ("name ne gpu-.*", ["web"]),
    ("scheduling.preemptible = true", ["gpu-1"]),
    ("labels.missing = x", []),
])
def test_filters(expression, names):
    assert matching(expression) == names


@pytest.mark.parametrize("expression", ["name =", "(name = a", "= a", "name ~ a"])
def test_malformed_filters_are_400(expression):
    with pytest.raises(ApiError) as caught:
        compile_filter(expression)
    assert caught.value.http_status == 400
