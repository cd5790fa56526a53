"""``tritonrec autoscale``: the Kubernetes controller that scales Triton on its own load metrics
(``run``), and the trace simulator that compares it with the HPA and KEDA (``simulate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Scale Triton Deployments on Triton's own load metrics, or simulate the policies on a load trace.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


@app.command("run")
def run(
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Namespace whose TritonAutoscaler resources to reconcile; repeatable."),
    ] = None,
    all_namespaces: Annotated[
        bool,
        typer.Option(
            "--all-namespaces",
            "-A",
            help="Reconcile the TritonAutoscaler resources of every namespace (one cluster-wide list; needs a ClusterRole). "
            "Not with --namespace.",
        ),
    ] = False,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            help="kubeconfig file to use. Default: in-cluster service account when run in a pod, else $KUBECONFIG or ~/.kube/config."
        ),
    ] = None,
    in_cluster: Annotated[
        bool, typer.Option("--in-cluster", help="Use the pod's service account (/var/run/secrets/kubernetes.io/serviceaccount).")
    ] = False,
    lease_name: Annotated[str, typer.Option(help="Name of the coordination.k8s.io/v1 Lease the controllers elect a leader on.")] = (
        "tritonrec-autoscaler"
    ),
    lease_namespace: Annotated[
        str | None,
        typer.Option(
            help="Namespace of the Lease. Default: the first --namespace; with --all-namespaces, the pod's own namespace "
            "($POD_NAMESPACE or the service account's namespace file)."
        ),
    ] = None,
    identity: Annotated[
        str | None,
        typer.Option(help="This controller's holderIdentity in the Lease. Default: $POD_NAME or the hostname, plus a random suffix."),
    ] = None,
    sync_period: Annotated[
        float,
        typer.Option(
            help="Seconds between syncs of a TritonAutoscaler without spec.syncPeriodSeconds, and between lists of the resources."
        ),
    ] = 5.0,
    lease_duration: Annotated[
        float, typer.Option(help="Seconds a standby waits after the leader's last renewal before taking over.")
    ] = 15.0,
    renew_deadline: Annotated[float, typer.Option(help="Seconds the leader keeps trying to renew before it stops acting.")] = 10.0,
    retry_period: Annotated[float, typer.Option(help="Seconds between tries to acquire or renew the Lease.")] = 2.0,
    drain_timeout: Annotated[
        float, typer.Option(help="Longest wait (seconds) for a pod chosen to go to finish its in-flight requests before the scale-down.")
    ] = 30.0,
    log_level: Annotated[str, typer.Option(help="Python logging level: DEBUG, INFO, WARNING.")] = "INFO",
) -> None:
    """Run the controller: scale each TritonAutoscaler's target on its pods' own Triton metrics, until Ctrl-C (or SIGTERM).

    Several copies may run against the same cluster: one leads (holds the Lease) and acts, the others wait as standbys
    and take over within --lease-duration when the leader goes. Needs the [k8s] extra.
    """
    import logging
    import os
    import signal
    import socket
    import threading
    import uuid

    from toolkit.errors import optional_dependencies

    with optional_dependencies("tritonrec autoscale run"):
        from toolkit.autoscale import controller as ctl
        from toolkit.autoscale.kube import KubeClient, pod_namespace
        from toolkit.autoscale.leader import LeaderElectionConfig

    if kubeconfig is not None and in_cluster:
        raise typer.BadParameter("pass either --kubeconfig or --in-cluster, not both", param_hint="--kubeconfig/--in-cluster")
    namespaces = tuple(namespace or ())
    if all_namespaces and namespaces:
        raise typer.BadParameter(
            f"pass either --namespace ({', '.join(namespaces)}) or --all-namespaces, not both", param_hint="--namespace/--all-namespaces"
        )
    if not all_namespaces and not namespaces:
        raise typer.BadParameter("pass --namespace NS (repeatable) or --all-namespaces", param_hint="--namespace/--all-namespaces")
    lease_namespace = lease_namespace or (namespaces[0] if namespaces else pod_namespace())
    if lease_namespace is None:
        raise typer.BadParameter(
            "with --all-namespaces outside a pod (no $POD_NAMESPACE, no service account namespace file) the Lease needs a namespace",
            param_hint="--lease-namespace",
        )
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kube = KubeClient.from_config(kubeconfig=kubeconfig, in_cluster=True if in_cluster else None)
    me = identity or f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    config = ctl.ControllerConfig(
        namespaces=namespaces, all_namespaces=all_namespaces, sync_period_s=sync_period, drain_timeout_s=drain_timeout
    )
    election = LeaderElectionConfig(
        namespace=lease_namespace,
        lease_name=lease_name,
        identity=me,
        lease_duration_s=lease_duration,
        renew_deadline_s=renew_deadline,
        retry_period_s=retry_period,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    watched = "all namespaces" if all_namespaces else ", ".join(namespaces)
    typer.echo(f"tritonrec autoscale run: {me} watching {watched}; Lease {election.namespace}/{lease_name}")
    try:
        ctl.run(kube, config, election, stop)
    finally:
        kube.close()


@app.command("simulate")
def simulate(
    trace: Annotated[
        list[str],
        typer.Option(
            "--trace",
            help="Load trace; repeatable. Generated: spike, on_off, diurnal, step, ramp. Public formats: "
            "azure-functions:PATH (Azure Functions 2019 per-minute counts; --function picks a row, default: all summed) "
            "and azure-llm:PATH (Azure LLM inference 2023 per-request timestamps, counted in --bin-s bins).",
        ),
    ] = ["spike", "on_off", "diurnal"],  # noqa: B006 (typer reads the default)
    peak_rps: Annotated[
        float, typer.Option("--peak-rps", help="Each trace is scaled so that its highest bin is this many requests per second.")
    ] = 50000.0,
    duration: Annotated[float, typer.Option("--duration", help="Each trace is stretched to this many seconds.")] = 3600.0,
    perf_report: Annotated[
        Path, typer.Option("--perf-report", help="A `tritonrec perf` report JSON whose concurrency sweep models one replica.")
    ] = Path("perf/results/triton_movielens.json"),
    model: Annotated[
        str | None, typer.Option("--model", help="The swept model to take from the report. Default: its optimized model.")
    ] = None,
    protocol: Annotated[str, typer.Option("--protocol", help="The sweep's protocol: http or grpc.")] = "http",
    slo_ms: Annotated[
        float, typer.Option("--slo-ms", help="Latency SLO in ms: the policies' p99 target and the SLO-attainment threshold.")
    ] = 10.0,
    start_delay: Annotated[
        float, typer.Option("--start-delay", help="Seconds from a pod's creation to ready (start + model load).")
    ] = 30.0,
    step: Annotated[float, typer.Option("--step", help="Simulation time step in seconds.")] = 0.02,
    queue_model: Annotated[
        str,
        typer.Option(
            "--queue-model",
            help="How a replica's queue grows with load: markov (exponential service, the default; over-predicts latency "
            "near saturation for steady service times) or allen-cunneen (scaled by (1 + Cs^2) / 2 from the sweep's spread "
            "at concurrency 1). perf/results/sim_check.md compares both with a real server.",
        ),
    ] = "markov",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the Poisson arrivals (the same arrivals for every policy).")] = 0,
    queue_timeout_ms: Annotated[
        float | None,
        typer.Option(
            "--queue-timeout-ms",
            help="Reject a request that would wait longer than this in a pod's queue (Triton's default_queue_policy with "
            "timeout_action REJECT; it counts as out of the SLO). Default: unbounded queues, Triton's default.",
        ),
    ] = None,
    policies: Annotated[
        str,
        typer.Option(
            "--policies",
            help="Comma-separated: static_peak, hpa_cpu, hpa_queue_time, keda_threshold, tritonrec; and the references "
            "oracle_now (knows the true rate now) and oracle_ahead (knows it a pod start ahead), which read the trace.",
        ),
    ] = "static_peak,hpa_cpu,hpa_queue_time,keda_threshold,tritonrec",
    function: Annotated[
        str | None, typer.Option("--function", help="azure-functions: the HashFunction (or a unique prefix) to take instead of the sum.")
    ] = None,
    bin_s: Annotated[float, typer.Option("--bin-s", help="azure-llm: seconds per bin when counting requests (before stretching).")] = 10.0,
    shape: Annotated[
        list[str] | None,
        typer.Option(
            "--shape",
            help="A parameter of the generated traces as KEY=VALUE, repeatable: rise_s, hold_s, fall_s, base_fraction, at (spike); "
            "on_s, off_s, rise_s, off_fraction (on_off); trough_fraction, periods (diurnal); base_fraction (step, ramp).",
        ),
    ] = None,
    spec_file: Annotated[
        Path | None,
        typer.Option(
            "--spec",
            help="A TritonAutoscaler (or just its spec), YAML or JSON, whose fields replace the simulator's defaults for "
            "the autoscaled policies (e.g. behavior.scaleDown.stabilizationWindowSeconds, maxReplicas, capacity).",
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the report: STEM.json, STEM.md and STEM.png.")] = Path("perf/results"),
    stem: Annotated[str, typer.Option("--stem", help="File name stem of the report.")] = "autoscale_sim",
) -> None:
    """Replay load traces against a simulated Triton Deployment under each scaling policy, side by side.

    One replica is modelled from a `tritonrec perf` report (its throughput and latency against concurrency), pods take
    --start-delay seconds to become ready, requests go to the replica with the fewest outstanding, and scale-downs drain
    first. Writes SLO attainment, p99, replica-seconds and scaling actions per trace and policy as JSON and Markdown,
    and a plot of load, pods and latency over time. A 1-hour trace takes 1 to 20 s per policy on a 2-core machine (longest
    while queues persist on many pods).
    """
    import inspect
    import shlex
    import subprocess
    import sys

    from toolkit.cli._common import console, progress
    from toolkit.errors import AutoscaleError, optional_dependencies

    with optional_dependencies("tritonrec autoscale simulate"):
        from toolkit.autoscale.sim_report import ORACLES, POLICIES, SimulationSettings, compare, write_report
        from toolkit.autoscale.simulate import ReplicaModel, allen_cunneen_scale, load_service_curve
        from toolkit.autoscale.traces import GENERATED, load_trace

    chosen = [p.strip() for p in policies.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in POLICIES + ORACLES]
    if unknown:
        raise typer.BadParameter(f"unknown policies {unknown}; use some of {', '.join(POLICIES + ORACLES)}", param_hint="--policies")
    overrides = None
    if spec_file is not None:
        import json

        try:
            text = spec_file.read_text()
        except OSError as exc:
            raise AutoscaleError(f"cannot read --spec {spec_file}: {exc}") from exc
        if spec_file.suffix == ".json":
            try:
                overrides = json.loads(text)
            except json.JSONDecodeError as exc:
                raise AutoscaleError(f"--spec {spec_file} is not JSON: {exc}") from exc
        else:
            with optional_dependencies("tritonrec autoscale simulate --spec (YAML)"):
                import yaml
            try:
                overrides = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise AutoscaleError(f"--spec {spec_file} is not YAML: {exc}") from exc
        if not isinstance(overrides, dict):
            raise AutoscaleError(f"--spec {spec_file} must hold a mapping (a TritonAutoscaler or its spec), got {type(overrides).__name__}")
    settings = SimulationSettings(
        spec_overrides=overrides,
        slo_ms=slo_ms,
        start_delay_s=start_delay,
        step_s=step,
        seed=seed,
        queue_timeout_s=None if queue_timeout_ms is None else queue_timeout_ms / 1000.0,
    )
    if queue_model not in ("markov", "allen-cunneen"):
        raise typer.BadParameter(f"expected markov or allen-cunneen, got {queue_model!r}", param_hint="--queue-model")
    curve = load_service_curve(perf_report, model=model, protocol=protocol)
    replica = ReplicaModel.from_curve(curve, slo_ms, queue_scale=1.0 if queue_model == "markov" else allen_cunneen_scale(curve))
    params: dict[str, float] = {}
    for item in shape or []:
        key, sep, value = item.partition("=")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise typer.BadParameter(f"expected KEY=NUMBER, got {item!r}", param_hint="--shape")
    loaded, used_keys = [], set()
    for t in trace:
        maker = GENERATED.get(t.replace("-", "_"))
        accepted = {k: v for k, v in params.items() if maker is not None and k in inspect.signature(maker).parameters}
        used_keys |= set(accepted)
        loaded.append(load_trace(t, duration_s=duration, peak_rps=peak_rps, function=function, bin_s=bin_s, **accepted))
    if set(params) - used_keys:
        raise typer.BadParameter(f"no trace given takes {sorted(set(params) - used_keys)}", param_hint="--shape")
    runs = {}
    with progress() as bar:
        for tr in loaded:
            task = bar.add_task(f"{tr.name}", total=len(chosen) * 100)
            done = {"n": 0}

            def tick(name: str, fraction: float, task=task, done=done, label=tr.name) -> None:
                bar.update(task, completed=done["n"] * 100 + fraction * 100, description=f"{label}: {name}")
                if fraction >= 1.0:
                    done["n"] += 1

            results, missing, used = compare(tr, replica, chosen, settings, progress=tick)
            bar.update(task, completed=len(chosen) * 100, description=tr.name)
            runs[tr.name] = (tr, results, missing, used)
    command = shlex.join(["tritonrec", *sys.argv[1:]]) if sys.argv[1:2] == ["autoscale"] else shlex.join(sys.argv)
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = None
    paths = write_report(
        out,
        runs,
        command=command,
        model=replica,
        perf_report=str(perf_report),
        settings=settings,
        stem=stem,
        provenance={"git_commit": head},
    )
    for name, (_, results, missing, _) in runs.items():
        console.print(f"[bold]{name}[/bold]")
        for r in results:
            s = r.summary()
            p99 = "inf" if s["p99_ms"] is None else f"{s['p99_ms']:.2f} ms"
            console.print(
                f"  {s['name']:<15} SLO {s['slo_attainment']:.4%}  p99 {p99:>12}  "
                f"{s['replica_seconds']:>10.0f} replica-s  {s['scaling_actions']} actions"
            )
        for p, why in missing.items():
            console.print(f"  {p:<15} [yellow]missing[/yellow]: {why}")
    console.print("wrote " + ", ".join(str(p) for p in paths))
