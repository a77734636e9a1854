"""Offline validation of the Kubernetes manifests under deploy/ (kubernetes-validate ships the
OpenAPI schemas of every Kubernetes release, so nothing here touches a cluster or the network)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (in the 'test' extra)")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KSERVE = ROOT / "deploy" / "kserve" / "inferenceservice.yaml"
# oldest release the manifests must keep working on, and the newest the validator knows
K8S_VERSIONS = ["1.29.0", kv.latest_version()]
CORE_KINDS = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}


def load_docs(path: Path) -> list[dict]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d]


def all_resources() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out += [(f"{path.name}:{d['kind']}", d) for d in load_docs(path)]
    return out


RESOURCES = all_resources()


def by_kind(kind: str) -> dict:
    found = [d for _, d in RESOURCES if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def cpu_cores(q: str) -> float:
    q = str(q)
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


def test_all_kinds_present():
    assert {d["kind"] for _, d in RESOURCES} >= CORE_KINDS


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name,doc", RESOURCES, ids=[n for n, _ in RESOURCES])
def test_schema_strict(name, doc, version):
    kv.validate(doc, version, strict=True)


def test_kustomization_lists_every_manifest():
    kust = load_docs(K8S / "kustomization.yaml")[0]
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == on_disk


def _container(pod_spec: dict, name: str | None = None) -> dict:
    cs = pod_spec["containers"]
    return cs[0] if name is None else next(c for c in cs if c["name"] == name)


def _env(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def assert_threads_match_cpu_limit(container: dict):
    limit = container["resources"]["limits"]["cpu"]
    assert cpu_cores(container["resources"]["requests"]["cpu"]) == cpu_cores(limit), "requests.cpu != limits.cpu"
    for var in ("BNN_KERNEL_THREADS", "OMP_NUM_THREADS"):
        e = _env(container)[var]
        if "value" in e:
            assert int(e["value"]) == math.ceil(cpu_cores(limit)), f"{var}={e['value']} but limits.cpu={limit}"
        else:
            ref = e["valueFrom"]["resourceFieldRef"]
            assert ref["resource"] == "limits.cpu"
            assert str(ref.get("divisor", "1")) == "1"
            assert ref.get("containerName", container["name"]) == container["name"]


def test_deployment_probes_resources_security():
    dep = by_kind("Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = _container(pod)
    port = next(p for p in c["ports"] if p["containerPort"] == 8000)
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] in (8000, port.get("name"))
    assert_threads_match_cpu_limit(c)
    assert c["resources"]["limits"]["memory"] == c["resources"]["requests"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    # the pod must get longer than the preStop pause plus uvicorn's drain
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = float(_env(c)["BNN_GRACEFUL_SHUTDOWN_S"]["value"])
    assert pre_stop + drain < pod["terminationGracePeriodSeconds"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()


def test_service_and_hpa_target_the_deployment():
    dep, svc, hpa = by_kind("Deployment"), by_kind("Service"), by_kind("HorizontalPodAutoscaler")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    c = _container(dep["spec"]["template"]["spec"])
    port_names = {p.get("name") for p in c["ports"]} | {p["containerPort"] for p in c["ports"]}
    assert all(p["targetPort"] in port_names for p in svc["spec"]["ports"])
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", dep["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])
    # CPU utilisation targets need CPU requests
    assert "cpu" in c["resources"]["requests"]
    pdb = by_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_kserve_inferenceservice():
    """KServe's CRD schema is not in kubernetes-validate; check its shape by hand and validate the
    predictor container against the core v1 Container schema by wrapping it in a Pod."""
    (isvc,) = load_docs(KSERVE)
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    predictor = isvc["spec"]["predictor"]
    c = _container(predictor, "kserve-container")
    assert [p["containerPort"] for p in c["ports"]] == [8000]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert_threads_match_cpu_limit(c)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "isvc-predictor"}, "spec": {"containers": [c]}}
    for version in K8S_VERSIONS:
        kv.validate(pod, version, strict=True)


def test_validator_rejects_a_broken_manifest():
    """Guard against a validator that silently accepts anything."""
    dep = yaml.safe_load((K8S / "deployment.yaml").read_text())
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = {"bad": 1}
    with pytest.raises(kv.ValidationError):
        kv.validate(dep, K8S_VERSIONS[-1], strict=True)
