"""Every input the fuzz found to break the property, kept as a named regression case.

``test_regressions.py`` runs each one; the fuzz tests keep looking for new ones.
"""

from __future__ import annotations

import pytest

from .harness import HELLO

# -- what the fuzz found ------------------------------------------------------------------
# Each input below broke the property when it was written (an internal error, two lines,
# a write on refusal, or a bad write on success); each stays here as a named regression.
# {run} is the seeded run's id, {RUN} its first letters upper-cased, {code} a code folder
# the store has not seen.
FOUND = [
    pytest.param(["runs", "list", "--limit", "99999999999999999999"], id="limit-above-int64"),
    pytest.param(["launch", "--queue=q", "--job=hello", "--name=\udcff"], id="non-utf8-run-name"),
    pytest.param(["queue", "create", "z", "--description", "\udcff"], id="non-utf8-description"),
    pytest.param(["runs", "show", "--", "\udcff"], id="non-utf8-run-id"),
    pytest.param(
        ["job", "create", "code", "-E", "python train.py", "-p", "\udcff", HELLO],
        id="non-utf8-project",
    ),
    pytest.param(
        ["launch", "--queue=q", "--job=hello", "--set=x=" + "[" * 100_000], id="set-deep-json"
    ),
    pytest.param(
        ["queue", "create", "z", "--config", "builder: " + "[" * 5000 + "]" * 5000],
        id="config-deep-yaml",
    ),
    pytest.param(
        ["queue", "create", "z", "--config", '{"builder": ' + '{"a": ' * 800 + "1" + "}" * 801],
        id="config-deep-json-validation",
    ),
    pytest.param(
        ["queue", "create", "z", "--config", '{"builder": {"a": ' + "1" * 5000 + "}}"],
        id="config-json-5000-digits",
    ),
    pytest.param(
        ["queue", "create", "z", "--config", "builder: {a: " + "1" * 5000 + "}"],
        id="config-yaml-5000-digits",
    ),
    pytest.param(["queue", "create", "z", "--config", "~nosuchuser"], id="config-unknown-user"),
    pytest.param(
        ["job", "create", "code", "-E", "python train.py", "--", "~nosuchuser/x"],
        id="code-path-unknown-user",
    ),
    pytest.param(
        ["job", "create", "code", "-E", "python train.py", "--", "0" * 256],
        id="code-path-name-too-long",
    ),
    pytest.param(
        ["queue", "create", "z", "--config", "builder: {1: a, '1': b}"], id="config-mixed-keys"
    ),
    pytest.param(["queue", "create", "z", "--config", "builder: {1: 2}"], id="config-int-key"),
    pytest.param(
        [
            "queue",
            "create",
            "z",
            "--config",
            '{"resource_args": {"local-process": {"env": {"A": "\\ud800"}}}}',
        ],
        id="config-lone-surrogate",
    ),
    pytest.param(
        ["queue", "create", "z", "--config", 'registry: "\\ud800\\udc00"'],
        id="config-yaml-surrogate-pair",
    ),
    pytest.param(
        ["launch", "--queue=q", "--job=hello", '--config={"entry_point": 5}'],
        id="spec-entry-point-a-number",
    ),
    pytest.param(
        ["launch", "--queue=box", '--config={"docker": {"docker_image": [1]}}'],
        id="spec-docker-image-a-list",
    ),
    pytest.param(["launch", "--queue=q", "--job=hello", "--set=lr=NaN"], id="set-nan-stored"),
    pytest.param(
        ["queue", "template", "set", "q", "x", "--type", "integer", "--min", "9" * 400],
        id="template-min-over-float",
    ),
    pytest.param(
        [
            "queue",
            "create",
            "z",
            "--config",
            '{"template_variables": {"x": {"type": "integer", "maximum": 1' + "0" * 400 + "}}}",
        ],
        id="config-template-maximum-over-float",
    ),
    pytest.param(
        [
            "queue",
            "create",
            "z",
            "--config",
            '{"resource_args": {"local-process": {"cpus": 1' + "0" * 400 + "}}}",
        ],
        id="config-cpus-over-float",
    ),
    pytest.param(
        [
            "launch",
            "--queue=q",
            "--job=hello",
            '--resource-args={"local-process": {"max_run_time": 1' + "0" * 400 + "}}",
        ],
        id="resource-args-max-run-time-over-float",
    ),
    pytest.param(["runs", "show", "{RUN}"], id="run-prefix-ignores-case"),
    pytest.param(["runs", "cancel", "________"], id="run-prefix-underscore-wildcard"),
    pytest.param(["runs", "show", "--", "a\nb"], id="newline-in-run-id-message"),
    pytest.param(["queue", "create", "z", "--config", "a\nb.json"], id="newline-in-path-message"),
    pytest.param(
        ["job", "create", "code", "-E", "python train.py", "-n", "bad name", "--", "{code}"],
        id="bad-job-name-writes-snapshot",
    ),
]
