"""W&B compat (issue 11): base images must be image references, as W&B's builder checks them.

W&B checks an accelerator base image before it writes it into the FROM line of the
Dockerfile it generates (wandb/sdk/launch/builder/build.py, ``_validate_accelerator_base_image``:
no white space or ``#``, a ``sha256:<64 hex>`` digest, a name that ``wandb.util.docker_image_regex``
matches). launchctl checks every base image (``builder.base_image``, the accelerator's, the
legacy ``cuda`` key) by Docker's reference grammar (launchctl/imageref.py), and earlier than
W&B does: when a queue config, a launch spec or an agent config is written, with nothing
stored; and again before the build, for a value that never passed the CLI.

Each corpus case runs W&B's own validator as the oracle, so a W&B release that changes its
verdict fails the case, and the deliberate differences are written down next to the case.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from launchctl.imageref import REFERENCE_MAX, image_ref_problem
from tests.conftest import PYTHON_IMAGE, cli, cli_json, make_script, table_counts

INJECTION = "ubuntu:22.04\nRUN echo PROOF > /proof.txt\n#"
HEX64 = "a" * 64


def wandb_verdict(image: str) -> bool:
    """W&B's own check of an accelerator base image: True when it accepts ``image``."""
    from wandb.sdk.launch.builder.build import _validate_accelerator_base_image
    from wandb.sdk.launch.errors import LaunchError

    try:
        _validate_accelerator_base_image(image)
    except LaunchError:
        return False
    return True


# (image, accepted by launchctl, accepted by W&B 0.31.0, source). Where the two verdicts
# differ the comment on the case says why launchctl's (Docker's grammar) is kept.
CORPUS: list[Any] = [
    # W&B tests/unit_tests/test_launch/test_builder/test_build.py,
    # test_get_base_setup_accepts_accelerator_base_image_refs
    pytest.param("ubuntu:22.04", True, True, id="wandb-test-ubuntu-tag"),
    pytest.param("nvidia/cuda:12.4.1-runtime-ubuntu22.04", True, True, id="wandb-test-nvidia-cuda"),
    pytest.param(
        "registry.example.com:5000/team/image:tag", True, True, id="wandb-test-registry-port"
    ),
    pytest.param(f"ubuntu@sha256:{HEX64}", True, True, id="wandb-test-sha256-digest"),
    # W&B docs, "How to make W&B Launch work with TensorFlow on GPU",
    # https://docs.wandb.ai/platform/launch/launch-faq/launch_tensorflow_gpu.md
    pytest.param("tensorflow/tensorflow:latest-gpu", True, True, id="wandb-docs-tensorflow-gpu"),
    # The default bases W&B itself writes into FROM: wandb/sdk/launch/agent/agent.py
    # (_DEFAULT_BASE_IMAGE) and builder/build.py (python:{version}-bookworm).
    pytest.param("python:3.12-slim", True, True, id="wandb-source-default-base"),
    pytest.param("python:3.10-bookworm", True, True, id="wandb-source-python-bookworm"),
    # W&B test_build.py, test_get_base_setup_rejects_invalid_accelerator_base_image_refs
    pytest.param(INJECTION, False, False, id="wandb-test-newline-run-injection"),
    pytest.param("ubuntu:22.04 # comment", False, False, id="wandb-test-comment"),
    pytest.param("ubuntu:22.04 as base", False, False, id="wandb-test-as-base"),
    pytest.param("ubuntu:22.04\n", False, False, id="wandb-test-trailing-newline"),
    pytest.param("ubuntu:22.04@sha256:not-a-digest", False, False, id="wandb-test-bad-digest"),
    pytest.param("Ubuntu:22.04", False, False, id="wandb-test-uppercase-name"),
    # Docker's grammar (distribution/reference regexp.go), where W&B agrees:
    pytest.param("localhost:5000/lab/base", True, True, id="docker-localhost-port"),
    pytest.param("127.0.0.1:5000/lab/base:v1", True, True, id="docker-ip-port"),
    pytest.param("my_org/my-img__x.y:v1.0_rc-1", True, True, id="docker-separators"),
    # A dotted first part that is no valid host is read as a path component (the grammar's
    # regular expression backtracks; so does W&B's docker_image_regex).
    pytest.param("team_a.v2/app:1", True, True, id="docker-dotted-first-part-not-a-host"),
    pytest.param("ubuntu:.hidden", False, False, id="docker-tag-starting-with-dot"),
    pytest.param("ubuntu:" + "t" * 129, False, False, id="docker-tag-over-128"),
    pytest.param("-ubuntu", False, False, id="docker-name-leading-dash"),
    pytest.param("ubuntu#x", False, False, id="docker-hash-sign"),
    # Deliberate differences, W&B's regex is looser than Docker's grammar: a path component's
    # separators are ".", "_", "__" or "-"+, so "a..b" and "a___b" are no Docker names
    # (`docker pull a..b` says "invalid reference format"); launchctl refuses them when
    # written, where W&B would pass them to the build, which fails there.
    pytest.param("lab..base:1", False, True, id="differs-double-dot"),
    pytest.param("lab___base:1", False, True, id="differs-triple-underscore"),
    # Deliberate difference: W&B's regex lets a path component be empty ("ubuntu/");
    # Docker's grammar does not.
    pytest.param("ubuntu/", False, True, id="differs-empty-path-component"),
    # Deliberate difference, W&B accepts only sha256 digests; Docker (go-digest) also
    # sha384 and sha512, and so does launchctl. Unknown algorithms are refused by both.
    pytest.param(f"ubuntu@sha512:{'b' * 128}", True, False, id="differs-sha512-digest"),
    pytest.param(f"ubuntu@md5:{'c' * 32}", False, False, id="docker-unknown-digest-algorithm"),
    # Deliberate differences, Docker's grammar takes any number of port digits and a
    # bracketed IPv6 host; W&B's regex takes a port of 1-5 digits and no IPv6 host.
    pytest.param("[::1]:5000/lab/base", True, False, id="differs-ipv6-host"),
    pytest.param("registry:123456/lab/base", True, False, id="differs-six-digit-port"),
    # Docker: a sha256 digest has exactly 64 hex digits.
    pytest.param(f"ubuntu@sha256:{'a' * 63}", False, False, id="docker-short-sha256"),
]


@pytest.mark.parametrize(("image", "ours", "theirs"), CORPUS)
def test_accelerator_base_image_at_queue_write(
    ready: Path, image: str, ours: bool, theirs: bool
) -> None:
    assert wandb_verdict(image) is theirs, "W&B's verdict changed: review this case"
    assert (image_ref_problem(image) is None) is ours
    config = {"builder": {"accelerator": {"base_image": image}}}
    before = table_counts(ready)
    proc = cli("queue", "create", "q", "-r", "local-container", "--config", json.dumps(config))
    if ours:
        assert proc.returncode == 0, proc.stderr
        shown = cli_json("queue", "show", "q")
        assert json.dumps(image) in json.dumps(shown)  # stored as written
    else:
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr  # one line, the newline in the value escaped
        assert "builder.accelerator.base_image" in lines[0]
        assert "is not an image reference" in lines[0]
        assert "Traceback" not in proc.stderr
        assert table_counts(ready) == before


# Each place a base image enters, with W&B's injection test value (W&B test_build.py,
# test_get_base_setup_rejects_invalid_accelerator_base_image_refs). W&B reads the accelerator
# from resource_args.<resource>.builder under either key (wandb/sdk/launch/_project_spec.py,
# _get_accelerator_base_image; W&B test_project.py, accelerator_key in accelerator, cuda).
FIELDS = [
    pytest.param({"builder": {"base_image": INJECTION}}, "builder.base_image", id="base_image"),
    pytest.param(
        {"builder": {"accelerator": {"base_image": INJECTION}}},
        "builder.accelerator.base_image",
        id="accelerator",
    ),
    pytest.param(
        {"builder": {"cuda": {"base_image": INJECTION}}}, "builder.cuda.base_image", id="cuda"
    ),
    pytest.param(
        {
            "resource_args": {
                "local-container": {"builder": {"accelerator": {"base_image": INJECTION}}}
            }
        },
        "resource_args.local-container: builder.accelerator.base_image",
        id="resource-args-accelerator",
    ),
    pytest.param(
        {"resource_args": {"local-container": {"builder": {"cuda": {"base_image": "a b"}}}}},
        "resource_args.local-container: builder.cuda.base_image",
        id="resource-args-cuda",
    ),
]


def _refused(proc: Any, field: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "is not an image reference" in lines[0], (
        proc.stderr
    )


@pytest.mark.parametrize(("config", "field"), FIELDS)
def test_queue_config_refuses_a_bad_base_image_and_stores_nothing(
    ready: Path, config: dict[str, Any], field: str
) -> None:
    before = table_counts(ready)
    proc = cli("queue", "create", "q", "-r", "local-container", "--config", json.dumps(config))
    _refused(proc, field)
    assert table_counts(ready) == before


@pytest.mark.parametrize(("config", "field"), FIELDS)
def test_launch_spec_refuses_a_bad_base_image_and_stores_nothing(
    ready: Path, tmp_path: Path, config: dict[str, Any], field: str
) -> None:
    # W&B's launch -c takes a launch spec with builder and resource_args (W&B docs,
    # "Create and deploy jobs / launch config": `wandb launch -c config.json`).
    cli("queue", "create", "q", "-r", "local-container", check=True)
    make_script(tmp_path / "code", "main.py", "print('hi')\n")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(config))
    before = table_counts(ready)
    proc = cli("launch", "-q", "q", "-u", str(tmp_path / "code"), "-E", "python main.py",
               "-c", str(spec))  # fmt: skip
    _refused(proc, field)
    assert table_counts(ready) == before


def test_agent_config_refuses_a_bad_base_image(home: Path) -> None:
    # The agent config's builder section (W&B docs, "Set up Launch / agent config":
    # launch-config.yaml builder:). W&B's BuilderConfig ignores base_image keys; launchctl
    # reads them as the agent's default, so it checks them.
    cli("queue", "create", "q", "-r", "local-container", check=True)
    config = json.dumps({"builder": {"accelerator": {"base_image": INJECTION}}})
    proc = cli("agent", "-q", "q", "--burst", "-c", config)
    _refused(proc, "builder.accelerator.base_image")


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(123, id="int"),
        pytest.param(["ubuntu"], id="list"),
    ],
)
def test_a_base_image_that_is_not_a_string_is_refused(ready: Path, value: Any) -> None:
    # W&B test_project.py, test_project_rejects_non_string_accelerator_base_image:
    # "Expected builder.accelerator.base_image to be a string Docker image reference".
    config = {"builder": {"accelerator": {"base_image": value}}}
    before = table_counts(ready)
    proc = cli("queue", "create", "q", "-r", "local-container", "--config", json.dumps(config))
    assert proc.returncode != 0
    assert "builder.accelerator.base_image: must be an image reference (a string)" in proc.stderr
    assert table_counts(ready) == before


def test_an_empty_base_image_means_not_set_as_w_and_b_reads_it(home: Path) -> None:
    # wandb/sdk/launch/_project_spec.py, _get_accelerator_base_image: None or "" is no image.
    config = {"builder": {"accelerator": {"base_image": ""}, "base_image": ""}}
    cli("queue", "create", "q", "-r", "local-container", "--config", json.dumps(config),
        check=True)  # fmt: skip


@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param("a" + "-a" * 200 + "!", id="separators-then-bang"),
        pytest.param("a." * 150 + "-", id="dots-then-dash"),
        pytest.param(("a" * 60 + ".") * 4 + "/b:" + "x" * 127 + "!", id="long-domain-bad-tag"),
        pytest.param("a" * 10_000_000, id="ten-megabytes"),
        pytest.param("a/" * 120 + "A", id="many-components-upper"),
    ],
)
def test_a_long_hostile_reference_is_judged_fast(hostile: str) -> None:
    started = time.perf_counter()
    problem = image_ref_problem(hostile)
    assert problem is not None
    # A guard against catastrophic backtracking (which takes minutes), not a speed target:
    # a bound far above the ~1 ms it takes, so a busy machine cannot fail it.
    assert time.perf_counter() - started < 2.0
    assert len(hostile) > REFERENCE_MAX or "!" in hostile or "A" in hostile or "-" in hostile


# -- the effect a run sees --------------------------------------------------------------------


def _code_job(tmp_path: Path) -> Path:
    root = tmp_path / "accel"
    make_script(root, "main.py", "import os\nprint('in-image', os.path.exists('/proof.txt'))\n")
    return root


def test_a_valid_accelerator_base_image_is_the_run_s_base(
    docker: Any, home: Path, tmp_path: Path
) -> None:
    # W&B docs (launch queue config, docker): builder.accelerator.base_image is the base of
    # the image the agent builds for a code job. The run's image must sit on that base.
    config = {"builder": {"accelerator": {"base_image": PYTHON_IMAGE}}}
    cli("queue", "create", "q", "-r", "local-container", "--config", json.dumps(config),
        check=True)  # fmt: skip
    run_id = cli("launch", "-q", "q", "-u", str(_code_job(tmp_path)), "-E", "python main.py",
                 check=True).stdout.strip()  # fmt: skip
    try:
        cli("agent", "-q", "q", "--burst", check=True, timeout=300)
        run = cli_json("runs", "show", run_id)
        assert run["state"] == "finished", run
        base_layers = docker.images.get(PYTHON_IMAGE).attrs["RootFS"]["Layers"]
        built = docker.images.get(run["image"]).attrs["RootFS"]["Layers"]
        assert built[: len(base_layers)] == base_layers
    finally:
        image = cli_json("runs", "show", run_id).get("image")
        if image and image != PYTHON_IMAGE:
            with contextlib.suppress(Exception):  # already gone
                docker.images.remove(image, force=True)


def test_a_base_image_edited_into_a_run_by_hand_fails_the_build_and_injects_nothing(
    docker: Any, home: Path, tmp_path: Path
) -> None:
    # Defence in depth: a spec that never passed the CLI's check (the run row edited in the
    # store) is checked again before the Dockerfile is written (W&B checks only there).
    cli("queue", "create", "q", "-r", "local-container", check=True)
    run_id = cli("launch", "-q", "q", "-u", str(_code_job(tmp_path)), "-E", "python main.py",
                 check=True).stdout.strip()  # fmt: skip
    conn = sqlite3.connect(home / "launchctl.db")
    try:
        (text,) = conn.execute("SELECT spec FROM runs WHERE id = ?", (run_id,)).fetchone()
        spec = json.loads(text)
        spec["builder"] = {"accelerator": {"base_image": f"{PYTHON_IMAGE}\nRUN touch /proof.txt"}}
        spec["resource_args"] = {"local-container": {"builder": spec["builder"]}}
        conn.execute("UPDATE runs SET spec = ? WHERE id = ?", (json.dumps(spec), run_id))
        conn.commit()
    finally:
        conn.close()
    cli("agent", "-q", "q", "--burst", timeout=300)
    run = cli_json("runs", "show", run_id)
    assert (run["state"], run["stage"]) == ("failed", "build"), run
    assert "builder.accelerator.base_image" in run["reason"]
    assert "is not an image reference" in run["reason"]
    assert not run.get("image")


def test_direct_launch_refuses_a_bad_base_image_before_any_build(
    ready: Path, tmp_path: Path
) -> None:
    # A direct launch (no queue) with W&B's injection value in its spec's builder.
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"builder": {"accelerator": {"base_image": INJECTION}}}))
    before = table_counts(ready)
    proc = cli("launch", "-r", "local-container", "-u", str(_code_job(tmp_path)),
               "-E", "python main.py", "-c", str(spec))  # fmt: skip
    _refused(proc, "builder.accelerator.base_image")
    assert table_counts(ready) == before


@pytest.mark.parametrize(
    ("config", "field"),
    [
        # W&B docs, "How to make W&B Launch work with TensorFlow on GPU" (the queue config
        # as W&B's queue editor holds it: the body alone, "gpus" beside "builder"),
        # https://docs.wandb.ai/platform/launch/launch-faq/launch_tensorflow_gpu.md, with the
        # base image of W&B's test_get_base_setup_rejects_invalid_accelerator_base_image_refs.
        pytest.param(
            {"gpus": "all", "builder": {"accelerator": {"base_image": "ubuntu:22.04 as base"}}},
            "builder.accelerator.base_image",
            id="editor-shape-tf-faq-as-base",
        ),
        # The same page's note: before W&B 0.15.6 the key was cuda.
        pytest.param(
            {"gpus": "all", "builder": {"cuda": {"base_image": INJECTION}}},
            "builder.cuda.base_image",
            id="editor-shape-legacy-cuda-injection",
        ),
    ],
)
def test_queue_config_in_the_editor_s_shape_refuses_a_bad_base_image(
    ready: Path, config: dict[str, Any], field: str
) -> None:
    before = table_counts(ready)
    proc = cli("queue", "create", "q", "-r", "local-container", "--config", json.dumps(config))
    _refused(proc, field)
    assert table_counts(ready) == before


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        pytest.param("ubuntu:22.04", True, id="field-filled-with-a-reference"),
        pytest.param("ubuntu:22.04 as base", False, id="field-filled-with-as-base"),
        pytest.param(
            "ubuntu:22.04\nRUN echo PROOF > /proof.txt", False, id="field-filled-with-run"
        ),
    ],
)
def test_a_queue_s_templated_base_image_is_checked_with_the_launch_s_value(
    ready: Path, tmp_path: Path, value: str, ok: bool
) -> None:
    # W&B docs, "Configure launch queue / queue config templates" (setup-queue-advanced):
    # an admin writes {{field}} in the queue config and a launcher fills it with --set-var
    # (W&B cli.py launch --set-var). The field is not a reference when written; the value
    # the launch fills it with must be one, checked at launch with nothing stored.
    config = {
        "template_variables": {"base": {"type": "string"}},
        "builder": {"accelerator": {"base_image": "{{base}}"}},
    }
    cli("queue", "create", "tq", "-r", "local-container", "--config", json.dumps(config),
        check=True)  # fmt: skip
    make_script(tmp_path / "code", "main.py", "print('hi')\n")
    before = table_counts(ready)
    proc = cli("launch", "-q", "tq", "-u", str(tmp_path / "code"), "-E", "python main.py",
               "--set-var", f"base={value}")  # fmt: skip
    if ok:
        assert proc.returncode == 0, proc.stderr
    else:
        _refused(proc, "builder.accelerator.base_image")
        assert table_counts(ready) == before


def test_queue_edit_refuses_a_bad_base_image_and_keeps_the_old_config(ready: Path) -> None:
    # The same check when a queue's config is replaced (W&B's queue editor saves the whole
    # config, docs: setup-launch-docker "Define your Docker queue configuration"), with
    # W&B's injection value (test_build.py, rejects_invalid_accelerator_base_image_refs).
    good = {"builder": {"accelerator": {"base_image": "ubuntu:22.04"}}}
    cli("queue", "create", "q", "-r", "local-container", "--config", json.dumps(good),
        check=True)  # fmt: skip
    shown = cli_json("queue", "show", "q")["config"]
    bad = {"builder": {"accelerator": {"base_image": INJECTION}}}
    proc = cli("queue", "edit", "q", "--config", json.dumps(bad))
    _refused(proc, "builder.accelerator.base_image")
    assert cli_json("queue", "show", "q")["config"] == shown


# -- properties: Docker's grammar against W&B's validator ---------------------------------------

_COMPONENT = st.from_regex(r"\A[a-z0-9]{1,6}(?:(?:[._]|__|-{1,2})[a-z0-9]{1,6}){0,2}\Z")
_LABEL = st.from_regex(r"\A[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?\Z")
_DOMAIN = st.builds(
    lambda labels, port: ".".join(labels) + (f":{port}" if port is not None else ""),
    st.lists(_LABEL, min_size=2, max_size=3),
    st.one_of(st.none(), st.integers(1, 65535)),
)
_TAG_TEXT = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}\Z")
_SHA256 = st.text("0123456789abcdef", min_size=64, max_size=64)
REFERENCES = st.builds(
    lambda domain, parts, tag, digest: (
        (f"{domain}/" if domain else "")
        + "/".join(parts)
        + (f":{tag}" if tag else "")
        + (f"@sha256:{digest}" if digest else "")
    ),
    st.one_of(st.none(), _DOMAIN),
    st.lists(_COMPONENT, min_size=1, max_size=3),
    st.one_of(st.none(), _TAG_TEXT),
    st.one_of(st.none(), _SHA256),
)
_QUICK = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


@_QUICK
@given(REFERENCES)
def test_every_reference_the_grammar_makes_is_accepted_by_both(ref: str) -> None:
    # References built from Docker's grammar (host[:port]/, components with . _ __ -,
    # a tag, a sha256 digest): launchctl and W&B's _validate_accelerator_base_image agree.
    assert image_ref_problem(ref) is None, ref
    assert wandb_verdict(ref), ref


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text("aAz09._-/:@ \n#", max_size=24))
def test_what_launchctl_accepts_w_and_b_accepts(text: str) -> None:
    # Any short text over the characters that matter: launchctl is never looser than W&B
    # (the documented differences need a digest other than sha256, or a port of 6 digits).
    assume(not re.search(r":\d{6,}(/|$)", text))
    if image_ref_problem(text) is None:
        assert wandb_verdict(text), text
