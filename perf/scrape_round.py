"""What one scrape round of the autoscaler costs: parsing a pod's /metrics text into signals, and a
round of PodScraper over real Triton servers with and without a pod that never answers.

Writes perf/results/scrape_round.json. Run from the repository root:

    .venv/bin/python perf/scrape_round.py [--pods 3] [--rounds 20]

* ``parse``: :func:`toolkit.autoscale.scrape.parse_metrics` of the saved two-model text
  (tests/fixtures/metrics/two_models_t1.txt) and :func:`~toolkit.autoscale.scrape.pod_signals`
  of it against two_models_t0.txt, in microseconds per pod (median of 2,000 calls).
* ``round``: ``--pods`` Triton servers (the bundled one, two Python-backend models each, as the
  fixtures) bound to 127.0.0.2, 127.0.0.3, ... on the same ports, as pods with their own IPs;
  ``--rounds`` rounds of :meth:`~toolkit.autoscale.scrape.PodScraper.scrape` of all of them, then
  the same with one more "pod" that accepts connections and never answers (a listening socket
  nobody accepts on), wall time of each round in milliseconds (median and max). The second set
  shows that one dead pod costs the round its deadline (``timeout_s``) and nothing more.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from toolkit._io import atomic_write_text
from toolkit.autoscale.scrape import PodScraper, ScrapeTarget, parse_metrics, pod_signals
from toolkit.cpu import detect_cpu
from toolkit.serving import TritonServer, free_ports

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "metrics"
TIMEOUT_S = 0.5


def _make_fixtures():
    spec = importlib.util.spec_from_file_location("make_metrics_fixtures", FIXTURES / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure_parse(calls: int = 2_000) -> dict:
    before, after = (FIXTURES / "two_models_t0.txt").read_text(), (FIXTURES / "two_models_t1.txt").read_text()
    target = ScrapeTarget("p", "127.0.0.1:8002")
    previous = parse_metrics(before)
    parse_us, signals_us = [], []
    for _ in range(calls):
        t0 = time.perf_counter()
        current = parse_metrics(after)
        t1 = time.perf_counter()
        pod_signals(target, previous, current, elapsed_s=3.0)
        t2 = time.perf_counter()
        parse_us.append((t1 - t0) * 1e6)
        signals_us.append((t2 - t1) * 1e6)
    return {
        "text_bytes": len(after.encode()),
        "models": 2,
        "calls": calls,
        "parse_us_median": round(statistics.median(parse_us), 1),
        "signals_us_median": round(statistics.median(signals_us), 1),
    }


def _rounds(scraper: PodScraper, targets: list[ScrapeTarget], rounds: int) -> dict:
    walls, failed = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        signals = scraper.scrape(targets)
        walls.append((time.perf_counter() - t0) * 1e3)
        failed.append(sorted(s.pod for s in signals if s.failed_scrapes))
    return {
        "targets": len(targets),
        "rounds": rounds,
        "wall_ms_median": round(statistics.median(walls), 2),
        "wall_ms_max": round(max(walls), 2),
        "pods_failed_in_last_round": failed[-1],
    }


def measure_rounds(pods: int, rounds: int, work: Path) -> dict:
    make = _make_fixtures()
    repo = make.write_repository(work / "model_repository")
    http_port, grpc_port, metrics_port = free_ports(3)
    with contextlib.ExitStack() as stack:
        servers = []
        for i in range(pods):
            host = f"127.0.0.{i + 2}"
            server = TritonServer(
                repo, host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, log_path=work / f"triton-{i}.log"
            )
            servers.append(stack.enter_context(server))
        for server in servers:
            make.send_load(server, {"fast": 40, "slow": 8})
        targets = [ScrapeTarget(f"triton-{i}", f"{s.host}:{metrics_port}", uid=str(i)) for i, s in enumerate(servers)]
        # a pod whose metrics endpoint accepts the connection and never answers
        dead = stack.enter_context(socket.socket())
        dead.bind(("127.0.0.1", 0))
        dead.listen(8)
        dead_target = ScrapeTarget("unresponsive", f"127.0.0.1:{dead.getsockname()[1]}", uid="dead")
        with PodScraper(timeout_s=TIMEOUT_S) as scraper:
            healthy = _rounds(scraper, targets, rounds)
            with_dead = _rounds(scraper, [*targets, dead_target], max(3, rounds // 4))
        return {"timeout_s": TIMEOUT_S, "server": servers[0].installation.source, "healthy": healthy, "with_unresponsive_pod": with_dead}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=3, help="Triton servers on 127.0.0.2, 127.0.0.3, ... (default 3)")
    parser.add_argument("--rounds", type=int, default=20, help="scrape rounds of the healthy pods (default 20)")
    parser.add_argument("--out", type=Path, default=ROOT / "perf" / "results" / "scrape_round.json")
    args = parser.parse_args()
    cpu = detect_cpu()
    report = {
        "command": "python perf/scrape_round.py" + "".join(f" {a}" for a in sys.argv[1:]),
        "machine": {
            "cpu": cpu.model_name,
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_1m_at_start": round(os.getloadavg()[0], 2),  # shared machine: other work ran beside it
        },
        "parse": measure_parse(),
    }
    with tempfile.TemporaryDirectory(prefix="tritonrec-scrape-round-") as work:
        report["round"] = measure_rounds(args.pods, args.rounds, Path(work))
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
