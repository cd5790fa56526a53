"""Leader election on a coordination.k8s.io/v1 Lease, against kmock's API emulator over HTTP."""

from __future__ import annotations

import threading
import time

import pytest

from toolkit.autoscale.kube import KubeClient
from toolkit.autoscale.leader import LeaderElectionConfig, LeaderElector
from toolkit.errors import AutoscaleError

NS = "recs"
# A short lease so the take-over is timed in seconds: lease 2 s > renew deadline 1.5 s > 1.2 x retry 0.25 s.
SHORT = {"lease_duration_s": 2.0, "renew_deadline_s": 1.5, "retry_period_s": 0.25}


def _config(identity: str, **kw) -> LeaderElectionConfig:
    return LeaderElectionConfig(namespace=NS, lease_name="tritonrec-autoscaler", identity=identity, **{**SHORT, **kw})


class Candidate:
    """One elector running in its own thread, recording when it led."""

    def __init__(self, kube: KubeClient, identity: str, **kw) -> None:
        self.elector = LeaderElector(kube, _config(identity, **kw))
        self.stop = threading.Event()
        self.leading = threading.Event()
        self.lost = None
        self.started_at: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _lead(self, lost: threading.Event) -> None:
        self.started_at = time.monotonic()
        self.lost = lost
        self.leading.set()
        lost.wait()

    def _run(self) -> None:
        self.elector.run(self.stop, self._lead)

    def start(self) -> Candidate:
        self.thread.start()
        return self

    def kill(self) -> None:
        """Stop the thread without handing the Lease back, as when the process is killed."""
        self.stop.set()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()


def _lease(kube: KubeClient) -> dict:
    lease = kube.read_lease(NS, "tritonrec-autoscaler")
    assert lease is not None
    return lease["spec"]


def test_first_candidate_creates_the_lease_and_holds_it(kube_api) -> None:
    kube = KubeClient.for_url(kube_api.url)
    a = Candidate(kube, "a").start()
    try:
        assert a.leading.wait(5)
        spec = _lease(kube)
        assert spec["holderIdentity"] == "a"
        assert spec["leaseDurationSeconds"] == 2
        assert spec["leaseTransitions"] == 0
        assert spec["acquireTime"] and spec["renewTime"]
        first_renew = spec["renewTime"]
        time.sleep(0.8)  # > 2 retry periods: at least one renewal
        spec = _lease(kube)
        assert spec["renewTime"] > first_renew
        assert spec["acquireTime"] <= first_renew  # renewals keep the acquire time
    finally:
        a.kill()


def test_follower_waits_then_takes_over_within_the_lease_duration_after_the_leader_is_killed(kube_api) -> None:
    kube = KubeClient.for_url(kube_api.url)
    a = Candidate(kube, "a", release_on_cancel=False).start()
    assert a.leading.wait(5)
    b = Candidate(kube, "b").start()
    try:
        time.sleep(3.0)  # longer than the lease: b must still follow while a renews
        assert not b.leading.is_set()
        assert _lease(kube)["holderIdentity"] == "a"

        killed_at = time.monotonic()
        a.kill()
        assert b.leading.wait(6)
        took = b.started_at - killed_at
        # b takes over once the record it last saw change is a lease old on its clock: at most the
        # lease duration after a's last renewal, plus one jittered retry period (b's polling,
        # <= 2.2 x 0.25 s) for b to see it; a little over 2 s, never the 3 s of a missed deadline.
        assert took <= 2.0 + 2.2 * 0.25 + 0.3, f"took over after {took:.2f} s"
        spec = _lease(kube)
        assert spec["holderIdentity"] == "b"
        assert spec["leaseTransitions"] == 1
    finally:
        b.kill()


def test_clean_stop_releases_the_lease_so_the_follower_takes_over_at_once(kube_api) -> None:
    kube = KubeClient.for_url(kube_api.url)
    a = Candidate(kube, "a", lease_duration_s=10.0, renew_deadline_s=5.0).start()
    assert a.leading.wait(5)
    b = Candidate(kube, "b", lease_duration_s=10.0, renew_deadline_s=5.0).start()
    try:
        time.sleep(0.5)
        stopped_at = time.monotonic()
        a.kill()  # release_on_cancel=True: a hands the Lease back
        assert a.lost.is_set()
        assert b.leading.wait(3)
        assert b.started_at - stopped_at < 2.0, "a released Lease is taken at the follower's next try, not after 10 s"
    finally:
        b.kill()


def test_leader_steps_down_when_renewals_fail_past_the_renew_deadline(kube_api) -> None:
    kube = KubeClient.for_url(kube_api.url)
    a = Candidate(kube, "a", release_on_cancel=False).start()
    try:
        assert a.leading.wait(5)
        kube_api.fail("put", f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/tritonrec-autoscaler", 500, times=1000)
        kube_api.fail("get", f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/tritonrec-autoscaler", 500, times=1000)
        failing_since = time.monotonic()
        assert a.lost is not None
        assert a.lost.wait(4), "the leader must stop leading when it cannot renew"
        stepped_down = time.monotonic() - failing_since
        # within the renew deadline (1.5 s) after the last good renewal, plus one retry period; and
        # strictly before the lease (2 s) would let anyone else take over
        assert stepped_down < 2.0, stepped_down
        a.thread.join(timeout=3)
        assert not a.thread.is_alive()
    finally:
        a.kill()


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"lease_duration_s": 2.0, "renew_deadline_s": 2.0}, "lease duration"),
        ({"renew_deadline_s": 0.5, "retry_period_s": 0.5}, "renew deadline"),
        ({"retry_period_s": 0.0}, "retry period"),
        ({"identity": ""}, "identity"),
    ],
)
def test_config_refuses_timings_client_go_refuses(kw: dict, field: str) -> None:
    base = {"namespace": NS, "lease_name": "l", "identity": "a", **SHORT}
    with pytest.raises(AutoscaleError, match=field):
        LeaderElectionConfig(**{**base, **kw})


def test_a_conflict_on_the_lease_is_a_lost_try_not_retried(kube_api) -> None:
    kube = KubeClient.for_url(kube_api.url)
    elector = LeaderElector(kube, _config("a"))
    assert elector.try_acquire_or_renew()  # creates the Lease
    path = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/tritonrec-autoscaler"
    kube_api.fail("put", path, 409, times=2)
    assert not elector.try_acquire_or_renew()  # the optimistic renewal and the one after a re-read both lost
    assert kube_api.requests("put", path) == 2  # one PUT each: a 409 means re-read, never re-send
    assert elector.try_acquire_or_renew()
