"""deploy/k8s: the manifests parse and refer to each other consistently."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import PurePosixPath
from typing import Any

import pytest
import yaml

from tests.deploy.helpers import (
    K8S,
    alert_rules,
    dockerfile_instructions,
    documented_memory_mb,
    final_stage,
    image_command,
    load_yaml,
    load_yaml_all,
    memory_quantity_mb,
    require_tool,
)


@pytest.fixture(scope="module")
def objects() -> dict[str, dict[str, Any]]:
    """kind -> the object (one of each kind)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml_all(path):
            assert doc["kind"] not in out, f"two {doc['kind']} objects"
            assert "namespace" not in doc["metadata"], f"{path.name}: namespace-agnostic please"
            out[doc["kind"]] = doc
    return out


@pytest.fixture(scope="module")
def pod(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return objects["StatefulSet"]["spec"]["template"]


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (c,) = pod["spec"]["containers"]
    return c


@pytest.fixture(scope="module")
def cfg(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return tomllib.loads(objects["ConfigMap"]["data"]["monitor.toml"])


def test_kustomization_lists_every_manifest_and_nothing_else() -> None:
    kust = load_yaml(K8S / "kustomization.yaml")
    assert kust["kind"] == "Kustomization"
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files
    assert "namespace" not in kust


def test_the_expected_objects_exist(objects: dict[str, dict[str, Any]]) -> None:
    assert set(objects) == {
        "ConfigMap",
        "Service",
        "StatefulSet",
        "ServiceMonitor",
        "PodDisruptionBudget",
    }


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_selectors_select_the_pods(objects: dict[str, dict[str, Any]], pod: dict[str, Any]) -> None:
    labels = pod["metadata"]["labels"]
    sts = objects["StatefulSet"]["spec"]
    assert matches(sts["selector"]["matchLabels"], labels)
    assert matches(objects["Service"]["spec"]["selector"], labels)
    assert matches(objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"], labels)


def test_the_statefulset_is_governed_by_the_headless_service(
    objects: dict[str, dict[str, Any]],
) -> None:
    svc = objects["Service"]
    assert objects["StatefulSet"]["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True, "scrape pods that are catching up"


def test_ports_agree_from_config_to_servicemonitor(
    objects: dict[str, dict[str, Any]], container: dict[str, Any], cfg: dict[str, Any]
) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": cfg["http"]["port"]}
    svc_ports = {p["name"]: p for p in objects["Service"]["spec"]["ports"]}
    assert svc_ports["http"]["targetPort"] in ports
    sm = objects["ServiceMonitor"]
    assert matches(sm["spec"]["selector"]["matchLabels"], objects["Service"]["metadata"]["labels"])
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] in svc_ports and endpoint["path"] == "/metrics"


def test_servicemonitor_labels_match_what_the_rules_aggregate(
    objects: dict[str, dict[str, Any]],
) -> None:
    # The operator names the job after the Service; the rules select job="monitor".
    job = objects["Service"]["metadata"]["name"]
    assert any(f'job="{job}"' in r["expr"] for r in alert_rules())
    (endpoint,) = objects["ServiceMonitor"]["spec"]["endpoints"]
    relabel = endpoint["relabelings"]
    assert {"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "instance"} in relabel
    assert {"action": "labeldrop", "regex": "pod"} in relabel, (
        "a pod label would survive `sum without(instance)`"
    )


def test_probes_hit_healthz_and_readyz_on_the_http_port(container: dict[str, Any]) -> None:
    expected = {
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
        "startupProbe": "/healthz",
    }
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get == {"path": path, "port": "http"}, probe


def test_the_config_map_is_mounted_where_the_command_reads_it(
    objects: dict[str, dict[str, Any]], pod: dict[str, Any], container: dict[str, Any]
) -> None:
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    cm_volumes = [n for n, v in volumes.items() if "configMap" in v]
    assert len(cm_volumes) == 1
    assert volumes[cm_volumes[0]]["configMap"]["name"] == objects["ConfigMap"]["metadata"]["name"]
    args = container["args"]
    assert ["monitor", *args] == image_command(), "the image's entry point plus these args"
    config_path = PurePosixPath(args[args.index("--config") + 1])
    mount = mounts[cm_volumes[0]]
    assert PurePosixPath(mount["mountPath"]) / config_path.name == config_path
    assert config_path.name in objects["ConfigMap"]["data"]
    assert mount["readOnly"] is True


def test_the_state_volume_claim_is_mounted_at_the_state_dir(
    objects: dict[str, dict[str, Any]], container: dict[str, Any], cfg: dict[str, Any]
) -> None:
    (claim,) = objects["StatefulSet"]["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == cfg["state"]["dir"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_a_read_only_root_keeps_every_written_path_on_a_volume(
    pod: dict[str, Any], container: dict[str, Any], cfg: dict[str, Any]
) -> None:
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
    env = dict(
        a.split("=", 1)
        for i, arg in final_stage(dockerfile_instructions())
        if i == "ENV"
        for a in arg.split()
        if "=" in a
    )
    for path in (cfg["state"]["dir"], "/tmp", env["NUMBA_CACHE_DIR"]):
        assert any(path == m or path.startswith(m + "/") for m in mounts), f"{path} is read-only"


def test_pod_runs_as_the_image_user(pod: dict[str, Any], container: dict[str, Any]) -> None:
    user = [a for i, a in final_stage(dockerfile_instructions()) if i == "USER"][-1]
    uid, _, gid = user.partition(":")
    sc = pod["spec"]["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert (str(sc["runAsUser"]), str(sc["runAsGroup"]), str(sc["fsGroup"])) == (uid, gid, gid)
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def quantity(q: str | int) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3}
    q = str(q)
    for suffix, factor in units.items():
        if q.endswith(suffix):
            return float(q[: -len(suffix)]) * factor
    return float(q)


def test_resources_fit_the_measured_peak_of_a_million_account_book(
    container: dict[str, Any],
) -> None:
    measured = documented_memory_mb()
    res = container["resources"]
    limit = memory_quantity_mb(res["limits"]["memory"])
    request = memory_quantity_mb(res["requests"]["memory"])
    # Headroom over the peak (allocator slack, Kafka buffers), not a multiple of it.
    assert 1.1 * measured["peak"] <= limit <= 1.5 * measured["peak"], (limit, measured)
    assert request == limit, "the peak recurs every snapshot: the node must hold it"
    assert measured["steady"] < measured["peak"]
    assert quantity(res["requests"]["cpu"]) == 1, "one core for the evaluation loop"
    assert "cpu" not in res["limits"], "a CPU limit throttles the evaluation loop"


def test_the_sizing_comment_quotes_the_documented_figures() -> None:
    text = (K8S / "statefulset.yaml").read_text(encoding="utf-8")
    comments = "\n".join(x for x in text.splitlines() if x.strip().startswith("#"))
    for figure in documented_memory_mb().values():
        assert f"{figure:.0f} MB" in comments, figure


def test_graceful_shutdown_has_time_to_checkpoint(objects: dict[str, dict[str, Any]]) -> None:
    spec = objects["StatefulSet"]["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] >= 60


def test_the_disruption_budget_never_blocks_a_drain(objects: dict[str, dict[str, Any]]) -> None:
    spec = objects["PodDisruptionBudget"]["spec"]
    assert spec.get("maxUnavailable") == 1 and "minAvailable" not in spec


def test_secrets_are_optional_references(container: dict[str, Any]) -> None:
    for e in container["env"]:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            assert ref["optional"] is True, e["name"]
            assert e["name"].startswith("MONITOR_")


def test_kustomize_builds_the_manifests() -> None:
    kubectl = require_tool("kubectl")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert sorted(d["kind"] for d in docs) == sorted(
        ["ConfigMap", "Service", "StatefulSet", "ServiceMonitor", "PodDisruptionBudget"]
    )
    for d in docs:
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "monitor"


def test_manifest_files_parse() -> None:
    for path in K8S.glob("*.yaml"):
        assert load_yaml_all(path), f"{path.name} is empty"
