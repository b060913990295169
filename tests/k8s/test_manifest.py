"""The Job a kubernetes run becomes (issue 14): W&B's queue config shape in, a Job that the
published Kubernetes schemas accept out (checked with kubernetes-validate), with launchctl's
labels, backoffLimit 0, restartPolicy Never, secrets as secretKeyRef, pull secrets, GPU
limits, and the hardening refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from launchctl import queues
from launchctl.errors import ConfigError
from launchctl.runners import k8s_manifest
from launchctl.runners.k8s_manifest import JobInputs, ManifestError, build_job

kubernetes_validate = pytest.importorskip("kubernetes_validate")
K8S_VERSION = "1.33.0"  # a release of the published schemas, kept fixed

# W&B docs, "Tutorial: Set up W&B Launch on Kubernetes", the Job spec queue config.
DOCS_K8S_JOB = """\
spec:
  template:
    spec:
      containers:
        - env:
            - name: MY_ENV_VAR
              value: some-value
          resources:
            requests:
              cpu: 1000m
              memory: 1Gi
metadata:
  labels:
    queue: k8s-test
namespace: wandb
"""
GPU_JOB = {
    "metadata": {"namespace": "ml", "labels": {"team": "vision"}},
    "spec": {
        "activeDeadlineSeconds": 3600,
        "template": {
            "spec": {
                "nodeSelector": {"gpu": "a100"},
                "imagePullSecrets": [{"name": "regcred"}],
                "containers": [
                    {
                        "name": "train",
                        "resources": {"limits": {"nvidia.com/gpu": 2, "cpu": "4"}},
                        "env": [
                            {
                                "name": "HF_TOKEN",
                                "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}},
                            }
                        ],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    }
                ],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
            }
        },
    },
    "env": {"WANDB_API_KEY": {"secret": "wandb-key"}, "MODE": "train"},
}


def inputs(**changes: Any) -> JobInputs:
    base: dict[str, Any] = {
        "run_id": "ab12cd34",
        "queue": "k8s",
        "agent_id": "agent-host-1",
        "image": "127.0.0.1:5000/launchctl/train:abc",
        "entrypoint": ["python", "train.py"],
        "args": ["--lr", "0.1"],
        "env": {"WANDB_RUN_ID": "ab12cd34", "WANDB_API_KEY": "the-key-value", "MODE": "train"},
        "secret_env": frozenset({"WANDB_API_KEY"}),
    }
    base.update(changes)
    return JobInputs(**base)


def valid(job: dict[str, Any]) -> None:
    """The published schema of the Job (strict: no field it does not know)."""
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(yaml.safe_load(DOCS_K8S_JOB), id="w&b-docs-job"),
        pytest.param(GPU_JOB, id="gpu-volumes-secrets"),
        pytest.param({}, id="empty"),
        pytest.param(
            {"spec": {"template": {"spec": {"hostNetwork": True}}}, "allow": ["hostNetwork"]},
            id="allowed-host-network",
        ),
    ],
)
def test_every_job_passes_the_published_schema(body: dict[str, Any]) -> None:
    namespace, job = build_job(body, inputs(pull_secret=True, cpus=8.0, memory=16 << 30))
    valid(job)
    assert job["metadata"]["namespace"] == namespace
    assert "allow" not in job and "env" not in job and "namespace" not in job


def test_the_docs_job_gets_launchctls_labels_and_w_and_bs_defaults() -> None:
    namespace, job = build_job(yaml.safe_load(DOCS_K8S_JOB), inputs())
    assert namespace == "wandb"  # W&B's older top-level namespace key
    meta = job["metadata"]
    assert meta["labels"] == {"queue": "k8s-test", "launchctl.run_id": "ab12cd34",
                              "launchctl.queue": "k8s"}  # fmt: skip
    assert meta["generateName"] == "launchctl-ab12cd34-" and "name" not in meta
    assert meta["annotations"] == {"launchctl.agent": "agent-host-1"}
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]
    assert pod["metadata"]["labels"]["launchctl.run_id"] == "ab12cd34"
    assert pod["spec"]["restartPolicy"] == "Never"
    main = pod["spec"]["containers"][0]
    assert main["name"] == "launch0"
    assert main["image"] == "127.0.0.1:5000/launchctl/train:abc"
    assert (main["command"], main["args"]) == (["python", "train.py"], ["--lr", "0.1"])
    assert main["resources"]["requests"] == {"cpu": "1000m", "memory": "1Gi"}
    env = {e["name"]: e for e in main["env"]}
    assert env["MY_ENV_VAR"] == {"name": "MY_ENV_VAR", "value": "some-value"}
    assert env["WANDB_RUN_ID"] == {"name": "WANDB_RUN_ID", "value": "ab12cd34"}


def test_a_secret_is_a_secret_key_ref_and_its_value_is_nowhere_in_the_job() -> None:
    _, job = build_job(GPU_JOB, inputs(pull_secret=True))
    main = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in main["env"]}
    ref = {"secretKeyRef": {"name": "launchctl-run-ab12cd34", "key": "WANDB_API_KEY"}}
    assert env["WANDB_API_KEY"] == {"name": "WANDB_API_KEY", "valueFrom": ref}
    assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
    assert "the-key-value" not in json.dumps(job)
    pulls = job["spec"]["template"]["spec"]["imagePullSecrets"]
    assert pulls == [{"name": "regcred"}, {"name": "launchctl-run-ab12cd34-pull"}]
    assert main["resources"]["limits"]["nvidia.com/gpu"] == "2"  # the client's models: text


def test_cpu_and_memory_limits_come_from_the_runs_limits_and_are_held_to_them() -> None:
    _, job = build_job({}, inputs(cpus=2.0, memory=4 << 30))
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "2", "memory": str(4 << 30)}
    with pytest.raises(ManifestError, match="ask for 4 cpus in all, above the 2"):
        build_job(GPU_JOB, inputs(cpus=2.0))
    two = {"spec": {"template": {"spec": {"containers": [{}, {"name": "side"}]}}}}
    with pytest.raises(ManifestError, match="container 'side' sets no memory limit"):
        build_job(two, inputs(memory=1 << 30))


def test_a_given_name_becomes_the_prefix_so_a_requeued_run_never_collides() -> None:
    _, job = build_job({"metadata": {"name": "Nightly_Train"}}, inputs())
    assert job["metadata"]["generateName"] == "nightly-train-"
    assert "name" not in job["metadata"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"queue": "q" * 64}, "queue name 'qqqq"),
        ({"queue": "ends-with-"}, "cannot be a Kubernetes label value"),
        ({"image": None}, "a kubernetes run needs an image"),
    ],
)
def test_values_that_cannot_be_labels_or_jobs_are_refused(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ManifestError, match=message):
        build_job({}, inputs(**changes))


def test_an_admins_label_must_be_a_valid_value_too() -> None:
    body = {"metadata": {"labels": {"owner": "alice smith"}}}
    with pytest.raises(ManifestError, match="label owner 'alice smith' cannot be"):
        build_job(body, inputs())


# -- hardening ---------------------------------------------------------------------------
def pod(**spec: Any) -> dict[str, Any]:
    return {"spec": {"template": {"spec": spec}}}


HOSTILE = [
    pytest.param(
        pod(containers=[{"securityContext": {"privileged": True}}]), "privileged", id="privileged"
    ),
    pytest.param(
        pod(initContainers=[{"name": "i", "securityContext": {"privileged": True}}]),
        "privileged",
        id="privileged-init-container",
    ),
    pytest.param(pod(hostPID=True), "hostPID", id="hostPID"),
    pytest.param(pod(hostNetwork=True), "hostNetwork", id="hostNetwork"),
    pytest.param(pod(hostIPC=True), "hostIPC", id="hostIPC"),
    pytest.param(
        pod(volumes=[{"name": "root", "hostPath": {"path": "/"}}]), "hostPath", id="hostPath"
    ),
    pytest.param(pod(serviceAccountName="cluster-admin"), "serviceAccountName", id="sa-name"),
    pytest.param(pod(serviceAccount="cluster-admin"), "serviceAccountName", id="sa-old-key"),
]


@pytest.mark.parametrize(("body", "key"), HOSTILE)
def test_host_and_cluster_access_is_refused_unless_the_admin_allows_it(
    body: dict[str, Any], key: str
) -> None:
    config = {"resource_args": {"kubernetes": body}}
    why = k8s_manifest.check_config(config)
    assert why is not None and f"allow: [{key}]" in why and "\n" not in why
    with pytest.raises(ManifestError, match="refused on a kubernetes queue"):
        build_job(body, inputs())
    allowed = {**body, "allow": [key]}
    assert k8s_manifest.check_config({"resource_args": {"kubernetes": allowed}}) is None
    _, job = build_job(allowed, inputs())
    valid(job)


@pytest.mark.parametrize("value", ["true", "True", "1", "yes", 1])
def test_a_flag_rendered_from_a_template_field_is_read_as_w_and_b_reads_it(value: Any) -> None:
    # A template field renders to a string ("{{host}}" -> "true"): still host access.
    with pytest.raises(ManifestError, match="hostNetwork"):
        build_job(pod(hostNetwork=value), inputs())


def test_allowing_one_exception_allows_no_other() -> None:
    body = {**pod(hostNetwork=True, hostPID=True), "allow": ["hostNetwork"]}
    why = k8s_manifest.check_config({"resource_args": {"kubernetes": body}})
    assert why is not None and "hostPID" in why


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"allow": ["everything"]}, "unknown exception 'everything'"),
        ({"allow": "hostPID"}, "allow must be a list"),
        ({"kind": "PyTorchJob"}, "launchctl runs batch/v1 Jobs"),
        ({"spec": {"backoffLimit": 3}}, "backoffLimit must be 0"),
        (pod(restartPolicy="OnFailure"), "restartPolicy must be Never"),
        ({"gpus": 2}, "nvidia.com/gpu"),
        ({"replicas": 2}, "unknown key 'replicas'"),
    ],
)
def test_queue_configs_the_runner_cannot_run_are_refused_when_written(
    body: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        queues.validate_config({"resource_args": {"kubernetes": body}}, "kubernetes")


def test_the_docs_config_is_accepted_in_both_shapes() -> None:
    body = yaml.safe_load(DOCS_K8S_JOB)
    for written in (body, {"resource_args": {"kubernetes": body}}):
        queues.validate_config(queues.canonical(written, "kubernetes"), "kubernetes")
