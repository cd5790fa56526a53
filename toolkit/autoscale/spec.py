"""The ``TritonAutoscaler`` custom resource: its spec and status as pydantic models, the checks that
refuse a bad spec with a message naming the field, and the CRD generated from the same models.

Group ``tritonrec.io``, version ``v1alpha1``, kind ``TritonAutoscaler``, plural ``tritonautoscalers``,
namespaced. Field names are camelCase as in the Kubernetes API (``scaleTargetRef``, ``minReplicas``);
the ``behavior`` block is the HPA's own (``autoscaling/v2`` HorizontalPodAutoscalerBehavior) with
the HPA's defaults (``pkg/apis/autoscaling/v2/defaults.go``: scale-up ``max(4 pods, 100%)`` per 15 s
with no stabilization, scale-down 100% per 15 s after a 300 s stabilization window).

A minimal resource::

    apiVersion: tritonrec.io/v1alpha1
    kind: TritonAutoscaler
    metadata: {name: ranker, namespace: recs}
    spec:
      scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: triton-ranker}
      minReplicas: 1
      maxReplicas: 10
      slo: {p99LatencyMs: 50}

:func:`parse_spec` turns the ``spec`` mapping (or the whole object) into an :class:`AutoscalerSpec`;
:func:`crd_manifest` gives the ``apiextensions.k8s.io/v1`` CRD, committed as
``k8s/crds/tritonautoscalers.tritonrec.io.yaml`` (``python -m toolkit.autoscale.spec`` rewrites it;
a test checks the committed file is what this module generates).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from toolkit.errors import InvalidAutoscalerSpecError

__all__ = [
    "GROUP",
    "VERSION",
    "KIND",
    "PLURAL",
    "API_VERSION",
    "CRD_PATH",
    "ScaleTargetRef",
    "Slo",
    "ScalingPolicy",
    "ScalingRules",
    "Behavior",
    "Fallback",
    "Capacity",
    "Forecast",
    "AutoscalerSpec",
    "StatusCondition",
    "AutoscalerStatus",
    "parse_spec",
    "crd_manifest",
    "crd_yaml",
    "write_crd",
]

GROUP = "tritonrec.io"
VERSION = "v1alpha1"
KIND = "TritonAutoscaler"
PLURAL = "tritonautoscalers"
API_VERSION = f"{GROUP}/{VERSION}"
#: Where the generated CRD is committed, relative to the repository root.
CRD_PATH = Path("k8s") / "crds" / f"{PLURAL}.{GROUP}.yaml"

#: Target kinds whose ``scale`` subresource the controller reads and patches (``apps/v1``).
SUPPORTED_TARGET_KINDS = ("Deployment", "StatefulSet")


class _Model(BaseModel):
    """camelCase aliases (``minReplicas``), snake_case attributes, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, strict=True)


class ScaleTargetRef(_Model):
    """The workload to scale (``autoscaling/v2`` CrossVersionObjectReference), in the resource's namespace."""

    api_version: Literal["apps/v1"] = Field("apps/v1", description="API version of the target: apps/v1.")
    kind: str = Field("Deployment", description="Kind of the target: Deployment or StatefulSet (anything with a scale subresource).")
    name: str = Field(min_length=1, max_length=253, description="Name of the target in the resource's namespace.")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in SUPPORTED_TARGET_KINDS:
            raise ValueError(f"unknown target kind (expected one of {', '.join(SUPPORTED_TARGET_KINDS)})")
        return kind


class Slo(_Model):
    """The latency objective, per request, in the server (Triton's queue + compute time).

    At least one of ``p99LatencyMs`` and ``queueComputeRatio`` must be set. Triton's counters give
    sums, so the policy sees mean times per request between scrapes; it takes a pod's p99 to be
    ``p99ToMeanRatio`` times its mean (measure the ratio on a ``tritonrec perf`` report as
    ``p99_latency_ms / avg_latency_ms`` at the load you run at).
    """

    p99_latency_ms: float | None = Field(None, gt=0, description="p99 of queue + compute time per request, in milliseconds.")
    queue_compute_ratio: float | None = Field(
        None, gt=0, description="Largest acceptable queue time per request over compute time per request (1.0: as long queued as computed)."
    )
    p99_to_mean_ratio: float = Field(
        3.0,
        ge=1,
        description="How many times the mean queue + compute time a pod's p99 is taken to be (the counters give means). "
        "Default 3: between what an M/D/1 queue gives near 70% utilization and the ~4.5 measured at concurrency 1 "
        "on perf/results/triton_movielens.json.",
    )

    @model_validator(mode="after")
    def _one_objective(self) -> Slo:
        if self.p99_latency_ms is None and self.queue_compute_ratio is None:
            raise ValueError("set at least one of p99LatencyMs and queueComputeRatio")
        return self


class ScalingPolicy(_Model):
    """One rate limit (``autoscaling/v2`` HPAScalingPolicy): at most ``value`` pods, or ``value`` percent
    of the replicas at the start of the period, added (or removed) per ``periodSeconds``."""

    type: Literal["Pods", "Percent"] = Field(description="Pods: an absolute count; Percent: a share of the current replicas.")
    value: int = Field(gt=0, description="Pods, or percent, per period (> 0).")
    period_seconds: int = Field(gt=0, le=1800, description="Length of the period in seconds (1..1800, as the HPA).")


class ScalingRules(_Model):
    """Limits in one direction (``autoscaling/v2`` HPAScalingRules). A field left out gets the HPA's
    default for its direction (filled by :class:`Behavior`, so never None after parsing)."""

    stabilization_window_seconds: int | None = Field(
        None,
        ge=0,
        le=3600,
        description="Seconds of past recommendations considered: on scale-down the highest in the window is used, "
        "on scale-up the lowest (0..3600, as the HPA).",
    )
    select_policy: Literal["Max", "Min", "Disabled"] = Field(
        "Max", description="Which policy's limit applies when several do: Max (the most change), Min (the least), Disabled (no change)."
    )
    policies: tuple[ScalingPolicy, ...] | None = Field(
        None, min_length=1, strict=False, description="The rate limits; the HPA's defaults when left out."
    )


def _default_scale_up() -> ScalingRules:
    # pkg/apis/autoscaling/v2/defaults.go: GenerateHPAScaleUpRules
    return ScalingRules(
        stabilization_window_seconds=0,
        select_policy="Max",
        policies=(ScalingPolicy(type="Pods", value=4, period_seconds=15), ScalingPolicy(type="Percent", value=100, period_seconds=15)),
    )


def _default_scale_down() -> ScalingRules:
    # pkg/apis/autoscaling/v2/defaults.go: GenerateHPAScaleDownRules (window: --horizontal-pod-autoscaler-downscale-stabilization)
    return ScalingRules(
        stabilization_window_seconds=300, select_policy="Max", policies=(ScalingPolicy(type="Percent", value=100, period_seconds=15),)
    )


class Behavior(_Model):
    """Scale-up and scale-down limits (``autoscaling/v2`` HorizontalPodAutoscalerBehavior). A direction
    given without some of its fields gets the HPA's default for them, as the HPA's defaulting does."""

    scale_up: ScalingRules = Field(default_factory=_default_scale_up, description="Defaults: max(4 pods, 100%) per 15 s, no stabilization.")
    scale_down: ScalingRules = Field(
        default_factory=_default_scale_down, description="Defaults: 100% per 15 s after a 300 s stabilization window."
    )

    @model_validator(mode="after")
    def _fill_direction_defaults(self) -> Behavior:
        filled = {}
        for name, default in (("scale_up", _default_scale_up), ("scale_down", _default_scale_down)):
            rules: ScalingRules = getattr(self, name)
            base = default()
            update = {f: getattr(base, f) for f in ("stabilization_window_seconds", "policies") if getattr(rules, f) is None}
            if update:
                filled[name] = rules.model_copy(update=update)
        for name, rules in filled.items():
            object.__setattr__(self, name, rules)
        return self


class Fallback(_Model):
    """What to do when every ready pod's metrics endpoint stops answering (like KEDA's ``fallback``, but
    only ever upward)."""

    failed_scrapes: int = Field(3, ge=1, description="Consecutive failed scrapes of every ready pod before the fallback applies.")
    replicas: int | None = Field(
        None,
        ge=0,
        description="Replicas to scale up to then (a floor: missing metrics never scale down); unset: hold the current count.",
    )


class Capacity(_Model):
    """Where the first estimate of one replica's throughput at the SLO comes from (then learned online),
    and how much of it to plan for."""

    per_replica_rps: float | None = Field(None, gt=0, description="Requests per second one replica serves within the SLO (seed).")
    from_perf_report: str | None = Field(
        None, min_length=1, description="Path of a `tritonrec perf` report JSON to read the seed from (its best throughput within the SLO)."
    )
    target_utilization: float = Field(
        0.85,
        gt=0,
        le=1,
        description="Share of the per-replica capacity at the SLO to plan for (0..1]. At 1 a replica runs with its p99 at the SLO, "
        "so any swing breaks it. Measured with the trace simulator (a 1 h diurnal trace of 5k..50k req/s on replicas modelled "
        "from perf/results/triton_movielens.json, 10 ms SLO): 1.0 kept 95.60% of requests within the SLO at 0.58 of "
        "static-peak replica-seconds, 0.9 99.62% at 0.61, 0.85 99.97% at 0.64, 0.8 99.997% at 0.68.",
    )


class Forecast(_Model):
    """The seasonal forecast (:mod:`toolkit.autoscale.forecast`): when the arrival rate's own history
    repeats, start pods a pod start before the load that comes back, instead of after it arrives."""

    seasonal: bool = Field(True, description="Scale up ahead of load that the history says recurs (off: react only).")
    history_seconds: float = Field(
        7200.0, gt=0, le=7 * 86400, description="Seconds of arrival-rate history kept for it (two periods are needed to see one)."
    )
    bin_seconds: float = Field(
        15.0, gt=0, le=3600, description="Width of the bins the history is averaged into before the period is sought."
    )
    min_period_seconds: float = Field(120.0, gt=0, description="Shortest period considered (shorter swings are the panic window's).")
    min_correlation: float = Field(
        0.7, gt=0, le=1, description="Autocorrelation the history must reach at its period (1: it repeats exactly) before it is trusted."
    )

    @model_validator(mode="after")
    def _two_periods(self) -> Forecast:
        if self.history_seconds < 2 * self.min_period_seconds:
            raise _CrossFieldError(
                f"`spec.forecast.historySeconds` ({self.history_seconds:g}) is less than twice `spec.forecast.minPeriodSeconds` "
                f"({self.min_period_seconds:g}): a period is trusted only once the history holds two"
            )
        return self


class AutoscalerSpec(_Model):
    """The ``spec`` of a ``TritonAutoscaler`` (see the module docstring for an example).

    Attributes (camelCase in the resource):
        scale_target_ref: the Deployment (or StatefulSet) to scale.
        min_replicas, max_replicas: bounds on the replica count (1 <= min <= max).
        slo: the latency objective.
        behavior: HPA-style rate limits and stabilization windows.
        panic_window_seconds: the short window over which a burst is detected (Knative's panic window,
            6 s: 10% of its 60 s stable window, ``pkg/autoscaler/config/config.go``).
        panic_threshold_percent: enter panic when the replicas the panic window asks for reach this
            percent of the current replicas (Knative's ``panic-threshold-percentage``, 200).
        sync_period_seconds: seconds between decisions (and scrapes); 5 s ("every few seconds").
        fallback: what to do after repeated failed scrapes.
        capacity: the seed of the per-replica throughput estimate.
        forecast: the seasonal forecast's settings.
        metrics_port: port of each pod's Triton metrics endpoint (Triton's default 8002).
        shadow: decide and record, change nothing (the controller acts on it).
    """

    scale_target_ref: ScaleTargetRef = Field(description="The workload to scale.")
    min_replicas: int = Field(1, ge=1, description="Lowest replica count (>= 1).")
    max_replicas: int = Field(ge=1, description="Highest replica count (>= minReplicas).")
    slo: Slo = Field(description="The latency objective.")
    behavior: Behavior = Field(default_factory=Behavior, description="Rate limits and stabilization windows, as the HPA's behavior.")
    panic_window_seconds: float = Field(6.0, gt=0, le=3600, description="Seconds of the short window that detects bursts (Knative: 6).")
    panic_threshold_percent: float = Field(
        200.0, gt=100, description="Panic when the short window asks for this percent of the current replicas (Knative: 200)."
    )
    sync_period_seconds: float = Field(5.0, gt=0, le=3600, description="Seconds between decisions and scrapes.")
    fallback: Fallback = Field(default_factory=Fallback, description="What to do after repeated failed scrapes.")
    capacity: Capacity = Field(default_factory=Capacity, description="Seed of the per-replica throughput at the SLO.")
    forecast: Forecast = Field(default_factory=Forecast, description="Scaling ahead of load the arrival history says recurs.")
    metrics_port: int = Field(8002, ge=1, le=65535, description="Port of each pod's Triton metrics endpoint.")
    shadow: bool = Field(False, description="Decide and record in status, but never change the target's replicas.")

    @model_validator(mode="after")
    def _consistent(self) -> AutoscalerSpec:
        if self.min_replicas > self.max_replicas:
            raise _CrossFieldError(f"`spec.minReplicas` ({self.min_replicas}) > `spec.maxReplicas` ({self.max_replicas})")
        fb = self.fallback.replicas
        if fb is not None and not self.min_replicas <= fb <= self.max_replicas:
            raise _CrossFieldError(
                f"`spec.fallback.replicas` ({fb}) is outside [`spec.minReplicas`, `spec.maxReplicas`]"
                f" = [{self.min_replicas}, {self.max_replicas}]"
            )
        return self

    @property
    def slo_seconds(self) -> float | None:
        """``slo.p99LatencyMs`` in seconds, or None."""
        return None if self.slo.p99_latency_ms is None else self.slo.p99_latency_ms / 1000.0


class _CrossFieldError(ValueError):
    """A check across fields whose message already names them (kept as is by :func:`parse_spec`)."""


class StatusCondition(_Model):
    """One condition in the status (``autoscaling/v2`` HorizontalPodAutoscalerCondition)."""

    type: Literal["AbleToScale", "ScalingActive", "ScalingLimited"]
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = Field(None, description="RFC 3339 time the condition last changed status.")


class AutoscalerStatus(_Model):
    """The ``status`` the controller writes (through the status subresource)."""

    observed_generation: int | None = Field(None, description="metadata.generation of the spec this status is about.")
    current_replicas: int | None = Field(None, ge=0, description="The target's replicas at the last decision.")
    desired_replicas: int | None = Field(None, ge=0, description="The replicas the last decision asked for.")
    last_scale_time: str | None = Field(None, description="RFC 3339 time of the last change of the target's replicas.")
    reason: str | None = Field(None, description="The last decision's reason, one line.")
    signals: dict[str, float] = Field(default_factory=dict, description="The numbers behind the last decision (units in the names).")
    shadow_recommendations: dict[str, int] = Field(
        default_factory=dict, description="Replicas other policies would ask for at the last decision (shadow mode), by policy name."
    )
    conditions: tuple[StatusCondition, ...] = Field(
        (), strict=False, description="AbleToScale, ScalingActive and ScalingLimited, with reasons."
    )


# ---------------------------------------------------------------------------------------------------------------------
# Parsing


def _field_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = ["spec"]
    for item in loc:
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
        else:
            parts.append(str(item))
    return ".".join(parts)


def parse_spec(obj: Mapping[str, Any]) -> AutoscalerSpec:
    """Check and parse a ``TritonAutoscaler`` spec.

    Args:
        obj: the ``spec`` mapping, camelCase as in the resource, or the whole custom object (a mapping
            with ``kind: TritonAutoscaler`` and a ``spec``), as the Kubernetes API returns it.

    Returns:
        The spec, with the defaults filled in.

    Raises:
        InvalidAutoscalerSpecError: the spec is not a mapping, or a field is missing, unknown, of the
            wrong type or out of range, or fields disagree; the message names each field as
            ``spec.<path>`` with the value given and what was expected (e.g.
            ``` `spec.minReplicas` (5) > `spec.maxReplicas` (3) ```).
    """
    if isinstance(obj, Mapping) and obj.get("kind") == KIND and "spec" in obj:
        obj = obj["spec"]
    if not isinstance(obj, Mapping):
        raise InvalidAutoscalerSpecError(
            f"`spec` of a {KIND} must be a mapping, got {type(obj).__name__}", hint="see k8s/crds/tritonautoscalers.tritonrec.io.yaml"
        )
    try:
        return AutoscalerSpec.model_validate(dict(obj))
    except ValidationError as exc:
        problems = []
        errors = exc.errors(include_url=False)
        # an error on a container whose items already have their own errors says nothing more
        locs = [tuple(e["loc"]) for e in errors]
        errors = [e for e in errors if not any(len(o) > len(e["loc"]) and o[: len(e["loc"])] == tuple(e["loc"]) for o in locs)]
        for error in errors:
            cause = (error.get("ctx") or {}).get("error")
            if isinstance(cause, _CrossFieldError):
                problems.append(str(cause))
                continue
            path = _field_path(error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "missing":
                problems.append(f"`{path}` is required")
            elif error["type"] == "extra_forbidden":
                problems.append(f"`{path}` is not a field of a {KIND} spec")
            else:
                problems.append(f"`{path}` ({error['input']!r}): {message}")
        raise InvalidAutoscalerSpecError(
            "invalid TritonAutoscaler: " + "; ".join(problems), hint="see k8s/crds/tritonautoscalers.tritonrec.io.yaml for the fields"
        ) from exc


# ---------------------------------------------------------------------------------------------------------------------
# The CRD


def _structural(schema: dict, defs: dict) -> dict:
    """A pydantic JSON schema (draft 2020-12) node as a Kubernetes structural OpenAPI v3 schema node:
    ``$ref`` inlined, ``anyOf [X, null]`` as ``X`` + ``nullable``, ``const`` as a one-value ``enum``,
    numeric ``exclusiveMinimum`` as OpenAPI 3.0's ``minimum`` + ``exclusiveMinimum: true``, tuples and
    dicts as arrays and maps, titles dropped (Kubernetes rejects ``$ref``, ``const`` and
    ``additionalProperties: false``; apiextensions.k8s.io/v1 JSONSchemaProps)."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(schema["anyOf"])
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {schema['anyOf']} as a structural schema")
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        out = _structural({**options[0], **rest}, defs)
        if nullable:
            out["nullable"] = True
            if out.get("default", 0) is None:
                del out["default"]
        return out
    out: dict[str, Any] = {}
    for key in ("description", "type", "enum", "format", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems"):
        if key in schema:
            out[key] = copy.deepcopy(schema[key])
    if "const" in schema:
        out["enum"] = [schema["const"]]
    if "exclusiveMinimum" in schema:
        out["minimum"], out["exclusiveMinimum"] = schema["exclusiveMinimum"], True
    if "exclusiveMaximum" in schema:
        out["maximum"], out["exclusiveMaximum"] = schema["exclusiveMaximum"], True
    if "default" in schema and schema["default"] is not None:
        out["default"] = copy.deepcopy(schema["default"])
    if schema.get("type") == "object":
        if "properties" in schema:
            out["properties"] = {name: _structural(node, defs) for name, node in schema["properties"].items()}
            if schema.get("required"):
                out["required"] = list(schema["required"])
        elif isinstance(schema.get("additionalProperties"), dict):
            out["additionalProperties"] = _structural(schema["additionalProperties"], defs)
    if schema.get("type") == "array":
        out["items"] = _structural(schema.get("items", {}), defs)
    if "type" not in out and "enum" in out:
        out["type"] = "string"
    return out


def _openapi(model: type[BaseModel]) -> dict:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(schema, schema.get("$defs", {}))


def crd_manifest() -> dict:
    """The ``apiextensions.k8s.io/v1`` CustomResourceDefinition of ``TritonAutoscaler``.

    The OpenAPI v3 schema of ``spec`` and ``status`` is generated from :class:`AutoscalerSpec` and
    :class:`AutoscalerStatus` (structural, as Kubernetes requires; defaults included so the API server
    fills them), with the status subresource and ``kubectl get`` columns Target, Min, Max, Current,
    Desired, Age. Checks across fields (min <= max) are not in the schema: the controller refuses such
    a spec with :func:`parse_spec`'s message in the status and an Event.

    Returns:
        The manifest as a JSON-safe dict.
    """
    spec_schema = _openapi(AutoscalerSpec)
    spec_schema.pop("description", None)
    spec_schema["description"] = "What to scale, within which bounds, against which latency objective, and how fast."
    status_schema = _openapi(AutoscalerStatus)
    status_schema["description"] = "What the controller saw and did at its last decision."
    columns = [
        {"name": "Target", "type": "string", "jsonPath": ".spec.scaleTargetRef.name", "description": "The scaled workload."},
        {"name": "Min", "type": "integer", "jsonPath": ".spec.minReplicas"},
        {"name": "Max", "type": "integer", "jsonPath": ".spec.maxReplicas"},
        {"name": "Current", "type": "integer", "jsonPath": ".status.currentReplicas"},
        {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": PLURAL, "singular": KIND.lower(), "kind": KIND, "listKind": f"{KIND}List", "shortNames": ["tas"]},
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "Scales a Triton Inference Server Deployment on Triton's own load metrics.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    """:func:`crd_manifest` as YAML text (PyYAML, keys in the manifest's order), with a header saying
    it is generated.

    Raises:
        MissingDependencyError: PyYAML (the ``[k8s]`` extra) is not installed.
    """
    from toolkit.errors import optional_dependencies

    with optional_dependencies("writing the TritonAutoscaler CRD"):
        import yaml
    header = "# Generated by `python -m toolkit.autoscale.spec` from toolkit/autoscale/spec.py; do not edit by hand.\n"
    return header + yaml.safe_dump(crd_manifest(), sort_keys=False, width=120)


def write_crd(root: Path | str = ".") -> Path:
    """Write :func:`crd_yaml` to :data:`CRD_PATH` under ``root`` (atomically) and return the path."""
    from toolkit._io import atomic_write_text

    path = Path(root) / CRD_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, crd_yaml())
    return path


if __name__ == "__main__":  # pragma: no cover - the regeneration command
    print(write_crd(Path(__file__).resolve().parents[2]))
