"""Elastic serving: scale a Triton Deployment on Triton's own load metrics.

The parts, each in its own module: the ``TritonAutoscaler`` resource's spec and its checks, the
signals scraped from each pod's ``/metrics`` endpoint, the scaling policy (pure functions of
signals, history, spec and time), faithful ports of the HPA's and KEDA's rules for comparison,
the Kubernetes controller with its Lease-based leader election, and a trace simulator that
replays a load trace against a model of a Triton Deployment under each policy.

No torch here: the controller runs in a small image next to the cluster (``.importlinter``).
"""
