#!/usr/bin/env python3
"""Checks the Helm chart in helm/switchboard without a cluster or a `helm` binary.

helm-python-sdk (Helm's own Go SDK through its C ABI) lints the chart strictly and renders it
with the default values, with ci/cluster-values.yaml (Redis Cluster, every optional resource
on) and with native TLS on the edges; kubernetes-validate checks every rendered manifest
against the Kubernetes API schemas (strict: unknown fields fail). Then what operators rely on
is asserted: pods without service links, a drain that fits the grace period, rolling updates
that never go below the wanted count, a slow scale-down, disruption budgets, config changes
that roll the pods, the TLS Secret mounted whole where the edges read it, values the schema
refuses, and an environment the real binary accepts (`switchboard check-config`, with the
rendered variables and, for TLS, a throwaway certificate from openssl: no unknown or refused
setting).

Usage: check_chart.py <switchboard binary>. Exits non-zero on the first failure.
"""

import os
import subprocess
import sys
from pathlib import Path

import logging

import helm_python as helm
import helm_python.logging as helm_logging
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "switchboard"
KUBE_VERSION = "1.31.0"
# Custom resources: their schemas come with their operators, not with Kubernetes.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
BASE = {"redis": {"url": "redis://redis:6379"}}


def fail(message: str) -> None:
    print(f"helm chart: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


_chart = None


def render(values: dict) -> list[dict]:
    global _chart
    if _chart is None:
        _chart = helm.Chart.load(str(CHART))
    rendered = _chart.render(values, name="sb", namespace="realtime", is_install=True)
    docs = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def deployment(docs: list[dict], role: str) -> dict:
    for d in by_kind(docs, "Deployment"):
        if d["metadata"]["name"].endswith(f"-{role}"):
            return d
    fail(f"no {role} Deployment")


def validate(docs: list[dict], what: str) -> None:
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(f"{what}: {doc['kind']} {doc['metadata']['name']}: {e.message} at {list(e.path)}")


def seconds(duration: str) -> int:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for suffix in ("ms", "s", "m", "h"):
        if duration.endswith(suffix):
            return int(float(duration[: -len(suffix)]) * units[suffix])
    fail(f"not a duration: {duration}")


def check_operations(docs: list[dict], values: dict, what: str) -> None:
    kinds = sorted({d["kind"] for d in docs})
    for needed in ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]:
        if needed not in kinds:
            fail(f"{what}: no {needed} (got {kinds})")
    for role in ["edge", "worker"]:
        pod = deployment(docs, role)["spec"]["template"]["spec"]
        if pod.get("enableServiceLinks") is not False:
            fail(f"{what}: the {role} pods must set enableServiceLinks: false (issue: SWITCHBOARD_* service links)")
        container = pod["containers"][0]
        if container["args"] != [role]:
            fail(f"{what}: the {role} container runs {container['args']}")
        if container["readinessProbe"]["httpGet"]["path"] != "/readyz":
            fail(f"{what}: {role} readiness is not /readyz")
        annotations = deployment(docs, role)["spec"]["template"]["metadata"]["annotations"]
        if "checksum/config" not in annotations:
            fail(f"{what}: {role} pods have no config checksum")
    edge = deployment(docs, "edge")
    spec = edge["spec"]
    if spec["strategy"]["rollingUpdate"]["maxUnavailable"] != 0:
        fail(f"{what}: edge rolling updates may go below the wanted count")
    pod = spec["template"]["spec"]
    drain = next(e["value"] for e in pod["containers"][0]["env"] if e["name"] == "SWITCHBOARD_DRAIN_WINDOW")
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    if pod["terminationGracePeriodSeconds"] <= seconds(drain) + pre_stop:
        fail(f"{what}: grace period {pod['terminationGracePeriodSeconds']} s does not outlast the drain ({drain} + {pre_stop} s)")
    hpa = by_kind(docs, "HorizontalPodAutoscaler")[0]["spec"]
    if hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] < 300:
        fail(f"{what}: the HPA scales down too eagerly")
    if "replicas" in spec:
        fail(f"{what}: with the HPA on, the Deployment must not pin replicas")
    pdbs = {d["metadata"]["name"] for d in by_kind(docs, "PodDisruptionBudget")}
    if pdbs != {"sb-switchboard-edge", "sb-switchboard-worker"}:
        fail(f"{what}: disruption budgets {pdbs}")
    if values.get("config") and not by_kind(docs, "ConfigMap"):
        fail(f"{what}: a config was given but no ConfigMap rendered")


def env_of(docs: list[dict], role: str, secrets: dict) -> dict:
    """The container's environment as the pod would get it (secret references resolved)."""
    env = {}
    for e in deployment(docs, role)["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            if ref["key"] in secrets:
                env[e["name"]] = secrets[ref["key"]]
            elif not ref.get("optional"):
                fail(f"{role}: env {e['name']} needs secret key {ref['key']}")
    return env


def self_signed_pair() -> dict[str, str]:
    """A throwaway certificate and key (openssl), standing in for a mounted TLS Secret."""
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"switchboard-chart-tls-{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    cert, key = tmp / "tls.crt", tmp / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=switchboard"],
        check=True, capture_output=True,
    )
    return {"/etc/switchboard/tls/tls.crt": str(cert), "/etc/switchboard/tls/tls.key": str(key)}


def check_binary_accepts(binary: str, docs: list[dict], config_text: str | None, what: str) -> None:
    secrets = {"jwt-secret": "j" * 48, "admin-key": "a" * 48, "redis-password": "r" * 24}
    for role in ["edge", "worker"]:
        env = env_of(docs, role, secrets)
        if "SWITCHBOARD_TLS_CERT" in env:
            mounted = self_signed_pair()
            for var in ["SWITCHBOARD_TLS_CERT", "SWITCHBOARD_TLS_KEY"]:
                env[var] = mounted[env[var]]
        if config_text is not None:
            path = Path(os.environ.get("TMPDIR", "/tmp")) / "switchboard-chart-config.toml"
            path.write_text(config_text)
            env["SWITCHBOARD_CONFIG"] = str(path)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        result = subprocess.run([binary, "check-config"], env={**clean, **env}, capture_output=True, text=True)
        output = result.stdout + result.stderr
        if result.returncode != 0 or "warning" in output.lower():
            fail(f"{what}: `switchboard check-config` refuses the {role} pod's environment:\n{output}")


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    # Warnings and errors only.
    helm_logging.enable_logging(logging.WARNING)

    report = helm.lint(str(CHART), BASE, strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
    if problems:
        fail(f"helm lint --strict: {problems}")

    cluster_values = yaml.safe_load((CHART / "ci" / "cluster-values.yaml").read_text())
    sentinel_values = yaml.safe_load((CHART / "ci" / "sentinel-values.yaml").read_text())
    tls_values = {**BASE, "tls": {"secretName": "switchboard-tls"}, "metrics": {"serviceMonitor": {"enabled": True}}}
    value_sets = [
        ("default values", BASE),
        ("ci/cluster-values.yaml", cluster_values),
        ("ci/sentinel-values.yaml", sentinel_values),
        ("tls values", tls_values),
    ]
    for what, values in value_sets:
        docs = render(values)
        validate(docs, what)
        check_operations(docs, values, what)
        check_binary_accepts(binary, docs, values.get("config"), what)
        print(f"helm chart: {what}: {len(docs)} manifests valid for Kubernetes {KUBE_VERSION}")

    # Sentinel: the edges and workers find the master through the sentinels, never through a
    # URL (a Service in front of a replicated Redis reaches replicas at random).
    docs = render(sentinel_values)
    for role in ["edge", "worker"]:
        env = env_of(docs, role, {"jwt-secret": "j" * 48, "admin-key": "a" * 48, "redis-password": "r" * 24})
        if "SWITCHBOARD_REDIS_URL" in env:
            fail(f"ci/sentinel-values.yaml: the {role} pod gets a Redis URL beside the sentinels")
        want = {"SWITCHBOARD_REDIS_SENTINELS": "redis:26379", "SWITCHBOARD_REDIS_SENTINEL_MASTER": "mymaster",
                "SWITCHBOARD_REDIS_SENTINEL__PASSWORD": "r" * 24, "SWITCHBOARD_PERSISTENCE__REPLICAS_ACK": "1"}
        if any(env.get(k) != v for k, v in want.items()):
            fail(f"ci/sentinel-values.yaml: the {role} pod's Sentinel settings: {env}")

    # The cluster values switch on the optional resources.
    docs = render(cluster_values)
    for kind in ["Ingress", "ServiceMonitor", "ConfigMap", "PrometheusRule"]:
        if not by_kind(docs, kind):
            fail(f"ci/cluster-values.yaml renders no {kind}")
    rules = by_kind(docs, "PrometheusRule")[0]["spec"]
    shipped = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    if rules != shipped:
        fail("the PrometheusRule does not carry deploy/prometheus/alerts.yml")
    if by_kind(docs, "Secret"):
        fail("with auth.existingSecret the chart must not create a Secret")
    hpa = by_kind(docs, "HorizontalPodAutoscaler")[0]["spec"]
    if not any(m["type"] == "Pods" for m in hpa["metrics"]):
        fail("connectionsPerPod does not add the connections metric to the HPA")

    # TLS: the edges mount the Secret (not by subPath, so renewals reach them), point the node
    # at it and probe over https; the workers serve plain HTTP; Prometheus scrapes https.
    docs = render(tls_values)
    edge = deployment(docs, "edge")["spec"]["template"]["spec"]
    container = edge["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    if env.get("SWITCHBOARD_TLS_CERT") != "/etc/switchboard/tls/tls.crt" or "SWITCHBOARD_TLS_KEY" not in env:
        fail("tls.secretName does not point the edge at the mounted certificate")
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    if mounts.get("tls", {}).get("mountPath") != "/etc/switchboard/tls" or "subPath" in mounts.get("tls", {}):
        fail("the TLS Secret must be mounted whole at /etc/switchboard/tls")
    if {"name": "tls", "secret": {"secretName": "switchboard-tls"}} not in edge["volumes"]:
        fail("the edge pods do not get the TLS Secret as a volume")
    for probe in ["readinessProbe", "livenessProbe"]:
        if container[probe]["httpGet"].get("scheme") != "HTTPS":
            fail(f"with TLS the edge's {probe} must use HTTPS")
    worker = deployment(docs, "worker")["spec"]["template"]["spec"]["containers"][0]
    if any(e["name"].startswith("SWITCHBOARD_TLS") for e in worker["env"]):
        fail("the workers must not get the edges' TLS settings")
    if by_kind(docs, "ServiceMonitor")[0]["spec"]["endpoints"][0].get("scheme") != "https":
        fail("with TLS the ServiceMonitor must scrape https")

    # A config change rolls the pods; a different replica count does not.
    def checksum(values: dict) -> str:
        return deployment(render(values), "edge")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    changed = {**cluster_values, "config": cluster_values["config"] + '\nlog_level = "debug"\n'}
    if checksum(cluster_values) == checksum(changed):
        fail("a config change does not change the pods' checksum")
    if checksum(BASE) != checksum({**BASE, "worker": {"replicas": 3}}):
        fail("the checksum changes for values that are not config")

    # Wrong values fail at install, with a message that names them.
    refused = [
        ({**BASE, "edge": {"replicas": "two"}}, "replicas"),
        ({**BASE, "drainWindow": "soon"}, "drainWindow"),
        ({**BASE, "redis": {"url": "http://redis"}}, "url"),
        ({**BASE, "auth": {"jwtSecret": "short"}}, "jwtSecret"),
        ({**BASE, "edgee": {}}, "edgee"),
        ({}, "redis.url is required"),
        ({**BASE, "redis": {"url": "redis://redis:6379", "sentinel": {"masterSet": "mymaster", "hosts": ["r:26379"]}}},
         "not both"),
        ({"redis": {"sentinel": {"masterSet": "mymaster"}}}, "redis.sentinel.hosts is required"),
        ({**BASE, "redis": {"url": "redis://redis:6379", "replicasAck": -1}}, "replicasAck"),
        ({**BASE, "edge": {"terminationGracePeriodSeconds": 20}}, "terminationGracePeriodSeconds"),
    ]
    for values, named in refused:
        try:
            render(values)
        except helm.HelmError as e:
            if named not in str(e):
                fail(f"{values} was refused, but the message does not name {named}: {e}")
            continue
        fail(f"{values} was accepted")
    print("helm chart: lint, schema, manifests and operations checks passed")


if __name__ == "__main__":
    main()
