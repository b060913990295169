"""`launchctl k8s rbac --namespace NS` (issue 14): the objects W&B's Launch FAQ says the
agent needs, printed for `kubectl apply -f -`, each valid by the published schemas."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import cli

kubernetes_validate = pytest.importorskip("kubernetes_validate")


def test_rbac_prints_the_agents_account_roles_and_bindings() -> None:
    proc = cli("k8s", "rbac", "--namespace", "wandb", check=True)
    docs = list(yaml.safe_load_all(proc.stdout))
    kinds = [d["kind"] for d in docs]
    assert kinds == ["ServiceAccount", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33.0", strict=True)
    account, role, cluster_role, binding, cluster_binding = docs
    assert account["metadata"] == {"name": "launchctl-agent", "namespace": "wandb"}
    # The Role: pods, configmaps, secrets and pods/log in the agent's namespace.
    assert role["metadata"]["namespace"] == "wandb"
    granted = {
        (g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    assert granted == {("", "pods"), ("", "configmaps"), ("", "secrets"), ("", "pods/log")}
    # The ClusterRole: what the runner calls (create/read/delete Jobs, list Pods, read logs,
    # the run's Secrets) in the namespaces its queues name.
    rules = {(g, r): set(rule["verbs"]) for rule in cluster_role["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}  # fmt: skip
    assert {"create", "get", "list", "delete"} <= rules[("batch", "jobs")]
    assert {"get", "list", "watch"} <= rules[("", "pods")]
    assert "get" in rules[("", "pods/log")]
    assert {"create", "update", "patch", "delete"} <= rules[("", "secrets")]
    subject = [{"kind": "ServiceAccount", "name": "launchctl-agent", "namespace": "wandb"}]
    assert binding["subjects"] == subject and binding["roleRef"]["name"] == "launchctl-agent"
    assert cluster_binding["subjects"] == subject
    assert cluster_binding["roleRef"]["name"] == cluster_role["metadata"]["name"]


def test_rbac_for_another_account_and_namespace() -> None:
    proc = cli("k8s", "rbac", "-n", "ml-team", "--service-account", "lab-agent", check=True)
    docs = list(yaml.safe_load_all(proc.stdout))
    assert {d["metadata"].get("namespace") for d in docs} == {"ml-team", None}
    assert docs[0]["metadata"]["name"] == "lab-agent"
    assert docs[4]["metadata"]["name"] == "lab-agent-cluster-role-ml-team"


@pytest.mark.parametrize(
    "args",
    [
        ["--namespace", "Bad_NS"],
        ["--namespace", "x" * 64],
        ["-n", "ok", "--service-account", "a b"],
    ],
)
def test_rbac_refuses_a_name_kubernetes_would_refuse_in_one_line(args: list[str]) -> None:
    proc = cli("k8s", "rbac", *args)
    assert proc.returncode == 1 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "invalid" in proc.stderr
