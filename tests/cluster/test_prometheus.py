"""A real Prometheus scrapes a real cluster with deploy/prometheus.yml; promtool checks deploy/.

Needs Debian's `prometheus` package (the `prometheus` and `promtool`
binaries); `.ci/run` installs it, and these tests skip, naming it, where it
is missing. The Prometheus process is started on a free loopback port and
stopped by its pid.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from railyard.proto import railyard_pb2 as pb
from tests.support.cluster import HOST, LocalCluster, free_ports
from tests.support.http import get, prometheus_query

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
# Scrape and evaluate every second: the test waits for a few samples.
INTERVAL = "1s"
RATE_WINDOW = "10s"
START_TIMEOUT_S = 30.0
WAIT_S = 40.0
POLL_S = 0.5
STOP_GRACE_S = 10.0
PROMTOOL_TIMEOUT_S = 60.0

needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="prometheus is not installed (Debian package `prometheus`; .ci/run installs it)",
)


@needs_prometheus
def test_promtool_passes_the_alert_rules_and_the_config() -> None:
    assert PROMTOOL is not None
    for args in (
        ["check", "rules", str(DEPLOY / "alerts.yml")],
        ["check", "config", str(DEPLOY / "prometheus.yml")],
    ):
        done = subprocess.run(
            [PROMTOOL, *args], capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT_S
        )
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"
        assert "SUCCESS" in done.stdout + done.stderr


def adapted_config(cluster: LocalCluster) -> str:
    """deploy/prometheus.yml with the test cluster's targets and a 1 s interval."""
    text = (DEPLOY / "prometheus.yml").read_text()
    targets = "".join(f"          - {cluster.metrics_addresses[nid]}\n" for nid in cluster.node_ids)
    adapted, replaced = re.subn(
        r"(      - targets:\n)(          - .*\n)+", lambda m: m.group(1) + targets, text
    )
    assert replaced == 1, "deploy/prometheus.yml: no targets list to adapt"
    adapted, replaced = re.subn(
        r"(scrape|evaluation)_interval: \S+", rf"\1_interval: {INTERVAL}", adapted
    )
    assert replaced == 2, "deploy/prometheus.yml: expected scrape_interval and evaluation_interval"
    return adapted


@contextlib.contextmanager
def running_prometheus(config_dir: Path) -> Iterator[str]:
    """Prometheus on a free loopback port; yields its base URL; stopped by pid."""
    assert PROMETHEUS is not None
    (port,) = free_ports(1)
    log = open(config_dir / "prometheus.log", "wb")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={config_dir / 'tsdb'}",
            f"--web.listen-address={HOST}:{port}",
            "--log.level=warn",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    base = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while get(f"{base}/-/ready")[0] != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                output = (config_dir / "prometheus.log").read_text(errors="replace")
                raise AssertionError(f"prometheus did not start ({proc.poll()}):\n{output}")
            time.sleep(POLL_S / 5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_GRACE_S)


def put_some(cluster: LocalCluster, nodes: list[str], n: int = 5) -> None:
    """A few puts through whichever of `nodes` answers (followers forward)."""
    for nid in nodes:
        stub = cluster.streams_stub(nid)
        try:
            for _ in range(n):
                stub.PutRecord(pb.PutRecordRequest(stream="s", data=b"x"), timeout=2)
            return
        except grpc.RpcError:
            continue


def wait_until(base: str, query: str, ok: object, what: str, load: object = None) -> list[dict]:  # type: ignore[type-arg]
    deadline = time.monotonic() + WAIT_S
    result: list[dict] = []  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        if callable(load):
            load()
        result = prometheus_query(base, query)
        if callable(ok) and ok(result):
            return result
        time.sleep(POLL_S)
    raise AssertionError(f"{what}: {query} gave {result} after {WAIT_S}s")


def by_instance(result: list[dict]) -> dict[str, float]:  # type: ignore[type-arg]
    return {r["metric"]["instance"]: float(r["value"][1]) for r in result}


@needs_prometheus
def test_a_real_prometheus_scrapes_every_node(tmp_path: Path) -> None:
    prom_dir = tmp_path / "prometheus"
    prom_dir.mkdir()
    with LocalCluster(tmp_path / "cluster", metrics=True) as cluster:
        (prom_dir / "prometheus.yml").write_text(adapted_config(cluster))
        shutil.copy(DEPLOY / "alerts.yml", prom_dir / "alerts.yml")
        leader = cluster.wait_for_leader()
        instances = {cluster.metrics_addresses[nid]: nid for nid in cluster.node_ids}
        with running_prometheus(prom_dir) as base:
            up = wait_until(
                base,
                'up{job="railyard"}',
                lambda r: len(r) == 3 and all(v == 1 for v in by_instance(r).values()),
                "every node up",
            )
            assert set(by_instance(up)) == set(instances)
            wait_until(
                base,
                "sum(railyard_server_is_leader)",
                lambda r: r and float(r[0]["value"][1]) == 1,
                "one leader",
            )
            wait_until(
                base,
                f"sum(rate(railyard_records_appended_total[{RATE_WINDOW}]))",
                lambda r: r and float(r[0]["value"][1]) > 0,
                "records appended at a non-zero rate",
                load=lambda: put_some(cluster, [leader]),
            )
            # The dashboard's queries all run (with its $job variable set).
            dashboard = json.loads((DEPLOY / "grafana" / "railyard.json").read_text())
            for panel in dashboard["panels"]:
                for target in panel["targets"]:
                    prometheus_query(base, target["expr"].replace("$job", "railyard"))
            rules = json.loads(get(f"{base}/api/v1/rules")[1])["data"]["groups"][0]["rules"]
            assert {r["name"] for r in rules} >= {
                "RailyardNoLeader",
                "RailyardHighNumberOfLeaderChanges",
                "RailyardHighFsyncDurations",
                "RailyardFollowerLagging",
                "RailyardDiskAlmostFull",
            }

            changes = "railyard_server_leader_changes_seen_total"
            before = by_instance(prometheus_query(base, changes))
            cluster.kill(leader)
            survivors = [n for n in cluster.node_ids if n != leader]
            cluster.wait_for_leader(among=survivors)
            survivor_instances = {cluster.metrics_addresses[n] for n in survivors}
            wait_until(
                base,
                changes,
                lambda r: all(by_instance(r).get(i, 0) > before[i] for i in survivor_instances),
                "leader changes rising on the survivors",
                load=lambda: put_some(cluster, survivors, 1),
            )
