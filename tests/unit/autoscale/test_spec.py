"""The TritonAutoscaler spec: defaults as the HPA's, bad specs refused with the field named, and the
committed CRD equal to the one generated from the pydantic models."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
from pydantic import BaseModel

from toolkit.autoscale.spec import (
    API_VERSION,
    CRD_PATH,
    KIND,
    AutoscalerSpec,
    AutoscalerStatus,
    crd_manifest,
    crd_yaml,
    parse_spec,
)
from toolkit.errors import InvalidAutoscalerSpecError, ToolkitError

ROOT = Path(__file__).resolve().parents[3]

EXAMPLE = {
    "apiVersion": API_VERSION,
    "kind": KIND,
    "metadata": {"name": "ranker", "namespace": "recs"},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton-ranker"},
        "minReplicas": 2,
        "maxReplicas": 20,
        "slo": {"p99LatencyMs": 50, "queueComputeRatio": 1.0},
        "behavior": {
            "scaleUp": {
                "stabilizationWindowSeconds": 0,
                "selectPolicy": "Max",
                "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}],
            },
            "scaleDown": {"stabilizationWindowSeconds": 600},
        },
        "panicWindowSeconds": 6,
        "syncPeriodSeconds": 5,
        "fallback": {"failedScrapes": 3, "replicas": 4},
        "capacity": {"perReplicaRps": 800},
        "metricsPort": 8002,
        "shadow": True,
    },
    "status": {
        "currentReplicas": 3,
        "desiredReplicas": 5,
        "lastScaleTime": "2026-12-02T14:00:00Z",
        "signals": {"arrival_rate_rps": 410.5},
        "shadowRecommendations": {"hpa_queue_time": 2},
        "conditions": [{"type": "AbleToScale", "status": "True", "reason": "SucceededRescale", "message": "ok"}],
    },
}


def _spec(**overrides) -> dict:
    base = {"scaleTargetRef": {"name": "triton"}, "maxReplicas": 10, "slo": {"p99LatencyMs": 50}}
    return {**base, **overrides}


def _schema() -> dict:
    return crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


# --- defaults ----------------------------------------------------------------------------------------------------


def test_defaults_are_the_hpas_behavior_and_knatives_panic_window() -> None:
    spec = parse_spec(_spec())
    up, down = spec.behavior.scale_up, spec.behavior.scale_down
    assert (up.stabilization_window_seconds, up.select_policy) == (0, "Max")
    assert [(p.type, p.value, p.period_seconds) for p in up.policies] == [("Pods", 4, 15), ("Percent", 100, 15)]
    assert (down.stabilization_window_seconds, down.select_policy) == (300, "Max")
    assert [(p.type, p.value, p.period_seconds) for p in down.policies] == [("Percent", 100, 15)]
    assert (spec.min_replicas, spec.panic_window_seconds, spec.panic_threshold_percent) == (1, 6.0, 200.0)
    assert (spec.metrics_port, spec.shadow, spec.fallback.failed_scrapes, spec.fallback.replicas) == (8002, False, 3, None)
    assert spec.scale_target_ref.kind == "Deployment" and spec.scale_target_ref.api_version == "apps/v1"


def test_a_direction_given_in_part_gets_the_hpa_defaults_for_the_rest() -> None:
    spec = parse_spec(_spec(behavior={"scaleDown": {"stabilizationWindowSeconds": 60}, "scaleUp": {"selectPolicy": "Min"}}))
    assert spec.behavior.scale_down.stabilization_window_seconds == 60
    assert [(p.type, p.value) for p in spec.behavior.scale_down.policies] == [("Percent", 100)]
    assert spec.behavior.scale_up.select_policy == "Min"
    assert len(spec.behavior.scale_up.policies) == 2


def test_the_whole_custom_object_is_accepted_as_well_as_its_spec() -> None:
    assert parse_spec(EXAMPLE) == parse_spec(EXAMPLE["spec"])
    spec = parse_spec(EXAMPLE)
    assert (spec.min_replicas, spec.max_replicas, spec.slo.p99_latency_ms, spec.shadow) == (2, 20, 50.0, True)
    assert spec.behavior.scale_down.stabilization_window_seconds == 600
    assert spec.slo_seconds == pytest.approx(0.05)


# --- bad specs ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (_spec(minReplicas=5, maxReplicas=3), "`spec.minReplicas` (5) > `spec.maxReplicas` (3)"),
        (_spec(slo={"p99LatencyMs": -5}), "`spec.slo.p99LatencyMs` (-5)"),
        (_spec(slo={"queueComputeRatio": 0}), "`spec.slo.queueComputeRatio` (0)"),
        (_spec(slo={}), "`spec.slo` ({}): set at least one of p99LatencyMs and queueComputeRatio"),
        (_spec(scaleTargetRef={"name": "t", "kind": "CronJob"}), "`spec.scaleTargetRef.kind` ('CronJob'): unknown target kind"),
        (_spec(scaleTargetRef={"name": "t", "apiVersion": "batch/v1"}), "`spec.scaleTargetRef.apiVersion` ('batch/v1')"),
        (_spec(scaleTargetRef={"kind": "Deployment"}), "`spec.scaleTargetRef.name` is required"),
        ({"scaleTargetRef": {"name": "t"}, "slo": {"p99LatencyMs": 1}}, "`spec.maxReplicas` is required"),
        (_spec(minReplicas=0), "`spec.minReplicas` (0)"),
        (_spec(maxReplicas="many"), "`spec.maxReplicas` ('many')"),
        (_spec(replicas=3), "`spec.replicas` is not a field of a TritonAutoscaler spec"),
        (
            _spec(behavior={"scaleUp": {"policies": [{"type": "Nodes", "value": 1, "periodSeconds": 15}]}}),
            "`spec.behavior.scaleUp.policies[0].type` ('Nodes')",
        ),
        (_spec(behavior={"scaleDown": {"policies": []}}), "`spec.behavior.scaleDown.policies` ([])"),
        (
            _spec(behavior={"scaleDown": {"stabilizationWindowSeconds": 4000}}),
            "`spec.behavior.scaleDown.stabilizationWindowSeconds` (4000)",
        ),
        (_spec(behavior={"scaleUp": {"selectPolicy": "Average"}}), "`spec.behavior.scaleUp.selectPolicy` ('Average')"),
        (_spec(fallback={"replicas": 50}), "`spec.fallback.replicas` (50) is outside [`spec.minReplicas`, `spec.maxReplicas`] = [1, 10]"),
        (_spec(metricsPort=70000), "`spec.metricsPort` (70000)"),
        (_spec(capacity={"targetUtilization": 1.5}), "`spec.capacity.targetUtilization` (1.5)"),
        (_spec(capacity={"perReplicaRps": -3}), "`spec.capacity.perReplicaRps` (-3)"),
        (_spec(panicThresholdPercent=100), "`spec.panicThresholdPercent` (100)"),
        (_spec(forecast={"minCorrelation": 1.5}), "`spec.forecast.minCorrelation` (1.5)"),
        (_spec(forecast={"binSeconds": 0}), "`spec.forecast.binSeconds` (0)"),
        (
            _spec(forecast={"historySeconds": 600, "minPeriodSeconds": 400}),
            "`spec.forecast.historySeconds` (600) is less than twice `spec.forecast.minPeriodSeconds` (400)",
        ),
    ],
)
def test_bad_spec_is_refused_naming_the_field(spec: dict, expected: str) -> None:
    with pytest.raises(InvalidAutoscalerSpecError) as info:
        parse_spec(spec)
    assert expected in str(info.value)
    assert isinstance(info.value, ToolkitError) and info.value.hint


def test_every_problem_of_a_spec_is_named_at_once() -> None:
    with pytest.raises(InvalidAutoscalerSpecError) as info:
        parse_spec(_spec(scaleTargetRef={"name": "t", "kind": "Job"}, slo={"p99LatencyMs": -1}))
    assert "`spec.scaleTargetRef.kind`" in str(info.value) and "`spec.slo.p99LatencyMs`" in str(info.value)


def test_a_spec_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(InvalidAutoscalerSpecError, match="must be a mapping, got list"):
        parse_spec({"kind": KIND, "spec": [1, 2]})


# --- the CRD ------------------------------------------------------------------------------------------------------


def test_committed_crd_is_the_generated_one() -> None:
    committed = (ROOT / CRD_PATH).read_text()
    assert committed == crd_yaml(), "regenerate with: .venv/bin/python -m toolkit.autoscale.spec"


def test_crd_names_status_subresource_and_printer_columns() -> None:
    crd = crd_manifest()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "tritonautoscalers.tritonrec.io"
    assert crd["spec"]["scope"] == "Namespaced" and crd["spec"]["names"]["kind"] == "TritonAutoscaler"
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Target", "Min", "Max", "Current", "Desired", "Age"]


def test_crd_schema_is_structural() -> None:
    """Kubernetes refuses $ref, const, anyOf without a type, additionalProperties: false, and a
    node without a type (apiextensions structural schema rules)."""

    def walk(node: dict, path: str) -> None:
        for key in ("$ref", "const", "anyOf", "oneOf", "title", "$defs"):
            assert key not in node, f"{path}: {key}"
        assert "type" in node, f"{path}: no type"
        assert node.get("additionalProperties", True) is not False, path
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}.*")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    walk(_schema(), "")


def test_crd_schema_accepts_the_example() -> None:
    # Draft 4 reads OpenAPI 3.0's boolean exclusiveMinimum as Kubernetes does.
    jsonschema.Draft4Validator(_schema()).validate(EXAMPLE)
    AutoscalerStatus.model_validate(EXAMPLE["status"])


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "minReplicas"), 0),
        (("spec", "slo", "p99LatencyMs"), 0),
        (("spec", "scaleTargetRef", "apiVersion"), "v1"),
        (("spec", "shadow"), "yes"),
    ],
)
def test_crd_schema_refuses_what_the_model_refuses(path: tuple[str, ...], value: object) -> None:
    import copy

    obj = copy.deepcopy(EXAMPLE)
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(_schema()).validate(obj)
    with pytest.raises(InvalidAutoscalerSpecError):
        parse_spec(obj)


def _model_tree(model: type[BaseModel]) -> dict:
    """alias -> (required, subtree) for every field, recursing into nested models and tuples of them."""
    tree = {}
    for name, info in model.model_fields.items():
        sub = {}
        ann = info.annotation
        for candidate in (ann, *getattr(ann, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                sub = _model_tree(candidate)
            for inner in getattr(candidate, "__args__", ()):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    sub = _model_tree(inner)
        tree[info.alias or name] = (info.is_required(), sub)
    return tree


def _schema_tree(node: dict) -> dict:
    if node.get("type") == "array":
        node = node["items"]
    required = set(node.get("required", ()))
    return {name: (name in required, _schema_tree(child)) for name, child in node.get("properties", {}).items()}


@pytest.mark.parametrize(("model", "key"), [(AutoscalerSpec, "spec"), (AutoscalerStatus, "status")])
def test_crd_schema_has_the_fields_of_the_pydantic_model(model: type[BaseModel], key: str) -> None:
    assert _schema_tree(_schema()["properties"][key]) == _model_tree(model)
