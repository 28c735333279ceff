#!/usr/bin/env python3
"""Validates deploy/kubernetes offline, for node/tests/deploy.rs.

Every built-in resource is checked against the Kubernetes schemas of kubernetes-validate
(strict: unknown fields fail) for the oldest and the newest version we support; the
ServiceMonitor against our own schema (deploy/kubernetes/schemas/). Then the manifests are
checked against each other and against the node configs in the ConfigMap: ports, probes,
the drain, secrets, Service selectors, the edges' upstream DNS name.

Usage: validate-kubernetes.py [--dir deploy/kubernetes] [--extract DIR]
--extract writes the ConfigMap's files to DIR, so the caller can run `corecast --check`.
"""
import argparse
import json
import pathlib
import sys
import tomllib

import jsonschema
import yaml
from kubernetes_validate import utils as kv

VERSIONS = ["1.29.0", kv.latest_version()]
WORKLOADS = ("Deployment", "StatefulSet")


def load(directory):
    docs = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def validate_schemas(docs, directory, errors):
    monitor_schema = json.loads((directory / "schemas/servicemonitor-monitoring-v1.json").read_text())
    for name, doc in docs:
        where = f"{name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc.get("kind") == "ServiceMonitor":
            for e in jsonschema.Draft202012Validator(monitor_schema).iter_errors(doc):
                errors.append(f"{where}: {e.json_path}: {e.message}")
            continue
        for version in VERSIONS:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as e:
                errors.append(f"{where} (k8s {version}): {'.'.join(map(str, e.path))}: {e.message}")
            except (kv.SchemaNotFoundError, kv.VersionNotSupportedError) as e:
                errors.append(f"{where} (k8s {version}): {e.message}")


def port_of(listen):
    return int(str(listen).rsplit(":", 1)[-1])


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def find(docs, kind, name=None):
    return [d for _, d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def workload_configs(docs, errors):
    """(workload, container, config) for every Corecast container, its config read from the ConfigMap."""
    out = []
    for _, w in docs:
        if w["kind"] not in WORKLOADS:
            continue
        pod = w["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            args = c.get("args", [])
            where = f"{w['kind']}/{w['metadata']['name']}"
            if "--config" not in args:
                errors.append(f"{where}: container {c['name']} has no --config")
                continue
            path = pathlib.PurePosixPath(args[args.index("--config") + 1])
            mount = next((m for m in c.get("volumeMounts", []) if m["mountPath"] == str(path.parent)), None)
            volume = volumes.get(mount["name"]) if mount else None
            if not volume or "configMap" not in volume:
                errors.append(f"{where}: {path} is not on a ConfigMap volume")
                continue
            cms = find(docs, "ConfigMap", volume["configMap"]["name"])
            data = cms[0].get("data", {}) if cms else {}
            if path.name not in data:
                errors.append(f"{where}: ConfigMap {volume['configMap']['name']} has no {path.name}")
                continue
            out.append((w, c, tomllib.loads(data[path.name])))
    return out


def check_workload(docs, w, c, config, errors):
    where = f"{w['kind']}/{w['metadata']['name']}"
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    want = {"rtmp": config.get("rtmp", {}).get("listen", "1935"),
            "http": config.get("http", {}).get("listen", "8081")}
    pull = config.get("cluster", {}).get("pull_listen")
    if pull:
        want["pull"] = pull
    for name, listen in want.items():
        if ports.get(name) != port_of(listen):
            errors.append(f"{where}: containerPort {name} is {ports.get(name)}, the config listens on {listen}")
    ready = c.get("readinessProbe", {}).get("httpGet", {})
    if ready.get("path") != "/readyz" or ready.get("port") != "http":
        errors.append(f"{where}: the readiness probe must be GET /readyz on port http")
    if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
        errors.append(f"{where}: the liveness probe must be GET /healthz")
    if "exec" not in c.get("lifecycle", {}).get("preStop", {}):
        errors.append(f"{where}: no preStop drain")
    grace = config.get("node", {}).get("shutdown_grace_secs", 10)
    if w["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30) < grace + 10:
        errors.append(f"{where}: terminationGracePeriodSeconds must exceed shutdown_grace_secs ({grace}) by 10 s")
    token = next((e for e in c.get("env", []) if e["name"] == "CORECAST_CLUSTER_TOKEN"), None)
    ref = (token or {}).get("valueFrom", {}).get("secretKeyRef", {})
    if not find(docs, "Secret", ref.get("name")):
        errors.append(f"{where}: CORECAST_CLUSTER_TOKEN must come from a Secret in the manifests")
    if w["kind"] == "StatefulSet":
        svc = find(docs, "Service", w["spec"]["serviceName"])
        if not svc or svc[0]["spec"].get("clusterIP") != "None":
            errors.append(f"{where}: serviceName must name a headless Service")


def check_upstream_dns(docs, configs, errors):
    for w, _, config in configs:
        dns = config.get("cluster", {}).get("upstream_dns")
        if not dns:
            continue
        host, port = dns.rsplit(":", 1)
        name, namespace = host.split(".")[:2]
        svc = [s for s in find(docs, "Service", name) if s["metadata"].get("namespace") == namespace]
        where = f"{w['kind']}/{w['metadata']['name']}: upstream_dns {dns}"
        if not svc or svc[0]["spec"].get("clusterIP") != "None":
            errors.append(f"{where}: no headless Service {name} in {namespace}")
            continue
        targets = [(ow, c) for ow, c, oc in configs
                   if matches(svc[0]["spec"]["selector"], ow["spec"]["template"]["metadata"]["labels"])
                   and oc.get("cluster", {}).get("pull_listen")
                   and port_of(oc["cluster"]["pull_listen"]) == int(port)]
        if not targets:
            errors.append(f"{where}: the Service selects no origin pulling on port {port}")


def check_references(docs, errors):
    templates = [w["spec"]["template"] for _, w in docs if w["kind"] in WORKLOADS]
    for svc in find(docs, "Service"):
        selected = [t for t in templates if matches(svc["spec"].get("selector"), t["metadata"]["labels"])]
        names = {p["name"] for t in selected for c in t["spec"]["containers"] for p in c.get("ports", [])}
        if not selected:
            errors.append(f"Service/{svc['metadata']['name']}: selects no workload")
        for p in svc["spec"]["ports"]:
            if p.get("targetPort") not in names:
                errors.append(f"Service/{svc['metadata']['name']}: targetPort {p.get('targetPort')} is no container port")
    for pdb in find(docs, "PodDisruptionBudget"):
        if not any(matches(pdb["spec"]["selector"]["matchLabels"], t["metadata"]["labels"]) for t in templates):
            errors.append(f"PodDisruptionBudget/{pdb['metadata']['name']}: selects no workload")
    for hpa in find(docs, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if not find(docs, ref["kind"], ref["name"]):
            errors.append(f"HorizontalPodAutoscaler/{hpa['metadata']['name']}: no {ref['kind']}/{ref['name']}")
    for sm in find(docs, "ServiceMonitor"):
        for ep in sm["spec"]["endpoints"]:
            if not any(matches(sm["spec"]["selector"].get("matchLabels"), s["metadata"].get("labels", {}))
                       and ep.get("port") in {p["name"] for p in s["spec"]["ports"]}
                       for s in find(docs, "Service")):
                errors.append(f"ServiceMonitor/{sm['metadata']['name']}: no Service with port {ep.get('port')}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", default=str(pathlib.Path(__file__).parent.parent / "deploy/kubernetes"))
    parser.add_argument("--extract")
    args = parser.parse_args()
    directory = pathlib.Path(args.dir)
    docs = load(directory)
    errors = []
    validate_schemas(docs, directory, errors)
    if not errors:
        configs = workload_configs(docs, errors)
        for w, c, config in configs:
            check_workload(docs, w, c, config, errors)
        check_upstream_dns(docs, configs, errors)
        check_references(docs, errors)
    if args.extract:
        out = pathlib.Path(args.extract)
        for cm in find(docs, "ConfigMap"):
            for name, text in cm.get("data", {}).items():
                (out / name).write_text(text)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if errors:
        return 1
    print(f"ok: {len(docs)} resources valid for Kubernetes {', '.join(VERSIONS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
