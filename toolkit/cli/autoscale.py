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
        list[str],
        typer.Option("--namespace", "-n", help="Namespace whose TritonAutoscaler resources to reconcile; repeatable."),
    ],
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
    lease_namespace: Annotated[str | None, typer.Option(help="Namespace of the Lease. Default: the first --namespace.")] = None,
    identity: Annotated[
        str | None,
        typer.Option(help="This controller's holderIdentity in the Lease. Default: $POD_NAME or the hostname, plus a random suffix."),
    ] = None,
    sync_period: Annotated[
        float, typer.Option(help="Seconds between syncs of a TritonAutoscaler whose spec does not set syncPeriodSeconds.")
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
        from toolkit.autoscale.kube import KubeClient
        from toolkit.autoscale.leader import LeaderElectionConfig

    if kubeconfig is not None and in_cluster:
        raise typer.BadParameter("pass either --kubeconfig or --in-cluster, not both", param_hint="--kubeconfig/--in-cluster")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kube = KubeClient.from_config(kubeconfig=kubeconfig, in_cluster=True if in_cluster else None)
    me = identity or f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    config = ctl.ControllerConfig(namespaces=tuple(namespace), sync_period_s=sync_period, drain_timeout_s=drain_timeout)
    election = LeaderElectionConfig(
        namespace=lease_namespace or namespace[0],
        lease_name=lease_name,
        identity=me,
        lease_duration_s=lease_duration,
        renew_deadline_s=renew_deadline,
        retry_period_s=retry_period,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    typer.echo(f"tritonrec autoscale run: {me} watching {', '.join(namespace)}; Lease {election.namespace}/{lease_name}")
    try:
        ctl.run(kube, config, election, stop)
    finally:
        kube.close()
