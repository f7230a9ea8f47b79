"""The Kustomize overlays, rendered by kubectl and validated offline: every built-in object
strictly against the Kubernetes 1.32 schemas (kubernetes-validate), KEDA's objects against the
fields of its CRDs that we use, and the promises of the issue read from the rendered objects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
#: a Prometheus duration, as the PrometheusRule CRD's pattern has it
_DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
BIN = Path(sys.executable).parent
OVERLAYS = ("dev", "staging", "prod")
#: the fields of the CRDs these manifests use, as the CRDs define them: KEDA's (keda.sh/v1alpha1)
#: and the Prometheus Operator's PrometheusRule (monitoring.coreos.com/v1)
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ScaledObject": {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "required": ["scaleTargetRef", "triggers"],
                "additionalProperties": False,
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}},
                    },
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer"},
                    "pollingInterval": {"type": "integer"},
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "properties": {
                                "type": {"type": "string"},
                                "metadata": {
                                    "type": "object",
                                    "additionalProperties": {"type": "string"},
                                },
                                "authenticationRef": {
                                    "type": "object",
                                    "required": ["name"],
                                },
                            },
                        },
                    },
                },
            }
        },
    },
    "TriggerAuthentication": {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["parameter", "name", "key"],
                            "additionalProperties": False,
                            "properties": {
                                "parameter": {"type": "string"},
                                "name": {"type": "string"},
                                "key": {"type": "string"},
                            },
                        },
                    }
                },
            }
        },
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "spec": {
                "type": "object",
                "required": ["groups"],
                "additionalProperties": False,
                "properties": {
                    "groups": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["name", "rules"],
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "interval": {"type": "string", "pattern": _DURATION},
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["expr"],
                                        "additionalProperties": False,
                                        "oneOf": [
                                            {"required": ["alert"]},
                                            {"required": ["record"]},
                                        ],
                                        "properties": {
                                            "alert": {"type": "string"},
                                            "record": {"type": "string"},
                                            "expr": {"type": ["string", "integer"]},
                                            "for": {"type": "string", "pattern": _DURATION},
                                            "keep_firing_for": {
                                                "type": "string",
                                                "pattern": _DURATION,
                                            },
                                            "labels": {
                                                "type": "object",
                                                "additionalProperties": {"type": "string"},
                                            },
                                            "annotations": {
                                                "type": "object",
                                                "additionalProperties": {"type": "string"},
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            },
        },
    },
}


def _render(overlay: str, tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    done = subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    )
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(done.stdout)
    return path, [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_strictly(overlay: str, tmp_path: Path) -> None:
    path, objects = _render(overlay, tmp_path)
    done = subprocess.run(
        [str(BIN / "kubernetes-validate"), "-k", "1.32.0", "--strict", "--quiet", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    failures = [line for line in done.stdout.splitlines() if line.startswith("ERROR")]
    assert done.returncode == 0 and not failures, done.stdout + done.stderr
    kinds = {obj["kind"] for obj in objects}
    for crd_kind, schema in CRD_SCHEMAS.items():
        assert crd_kind in kinds
        for obj in objects:
            if obj["kind"] == crd_kind:
                jsonschema.validate(obj, schema)


def _by(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_keeps_the_promises(overlay: str, tmp_path: Path) -> None:
    _, objects = _render(overlay, tmp_path)
    namespaces = {o["metadata"].get("namespace") for o in objects}
    assert len(namespaces) == 1 and None not in namespaces
    for kind, name in (
        ("Deployment", "precise-mrd-api"),
        ("Deployment", "precise-mrd-worker"),
        ("Job", "precise-mrd-migrate"),
    ):
        pod = _by(objects, kind, name)["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"] and container["resources"]["limits"]
            for variable in container.get("env", []):
                assert (
                    "value" not in variable
                    or not any(word in variable["name"] for word in ("PASSWORD", "SECRET_KEY"))
                    or variable["value"].startswith("/run/secrets/")
                ), variable
    api = _by(objects, "Deployment", "precise-mrd-api")["spec"]["template"]["spec"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert api["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert api["startupProbe"]["httpGet"]["path"] == "/health/live"
    hpa = _by(objects, "HorizontalPodAutoscaler", "precise-mrd-api")["spec"]
    assert hpa["maxReplicas"] <= 10 and {m["resource"]["name"] for m in hpa["metrics"]} == {
        "cpu",
        "memory",
    }
    scaled = _by(objects, "ScaledObject", "precise-mrd-worker")["spec"]
    assert scaled["minReplicaCount"] == 0 and scaled["triggers"][0]["type"] == "redis"
    settings = _by(objects, "ConfigMap", "precise-mrd-settings")["data"]
    assert scaled["triggers"][0]["metadata"]["listName"] == settings["PRECISE_MRD_CELERY_QUEUE"]
    assert settings["PRECISE_MRD_AUTH_MODE"] in ("api_key", "jwt", "both")
    ingress = _by(objects, "Ingress", "precise-mrd")
    annotations = ingress["metadata"]["annotations"]
    assert "cert-manager.io/cluster-issuer" in annotations
    assert "nginx.ingress.kubernetes.io/proxy-body-size" in annotations
    assert "nginx.ingress.kubernetes.io/limit-rps" in annotations
    assert ingress["spec"]["tls"][0]["hosts"] == [ingress["spec"]["rules"][0]["host"]]
    deny = _by(objects, "NetworkPolicy", "precise-mrd-default-deny")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert {o["metadata"]["name"] for o in objects if o["kind"] == "PodDisruptionBudget"} == {
        "precise-mrd-api",
        "precise-mrd-worker",
    }
    pvc = _by(objects, "PersistentVolumeClaim", "precise-mrd-data")["spec"]
    assert pvc["accessModes"] == ["ReadWriteMany"]
    # every pod carries the label the egress policy selects
    egress = _by(objects, "NetworkPolicy", "precise-mrd-egress")["spec"]["podSelector"]
    for kind, name in (("Deployment", "precise-mrd-api"), ("Job", "precise-mrd-migrate")):
        labels = _by(objects, kind, name)["spec"]["template"]["metadata"]["labels"]
        assert egress["matchLabels"].items() <= labels.items()


def test_deploy_kubernetes_without_a_cluster_says_what_it_would_do(tmp_path: Path) -> None:
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "KUBECONFIG": str(tmp_path / "none"),
    }
    done = subprocess.run(
        [str(ROOT / "deploy.sh"), "--kubernetes", "--overlay", "prod"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "It would have run: kubectl apply -k k8s/overlays/prod" in done.stderr
    unknown = subprocess.run(
        [str(ROOT / "deploy.sh"), "--kubernetes", "--overlay", "nope"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert unknown.returncode == 1 and "dev, staging, prod" in unknown.stderr
