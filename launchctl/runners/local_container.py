"""local-container: run a run as a Docker container through docker-py.

Options come from W&B's ``resource_args.local-container`` shape and map onto
container settings; anything outside ``OPTIONS`` is refused when the queue or launch
is written (the registry hands them to the queue's validation). docker is imported
only where it is used: ``queue create`` reads ``OPTIONS``.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from launchctl.errors import RunnerError
from launchctl.masking import Masker
from launchctl.runenv import env_from_option
from launchctl.runners import logfile
from launchctl.runners.base import METRICS_MOUNT, WANDB_DIR_MOUNT, CacheMount, Exit, Launch
from launchctl.runners.registry import register

LABEL_RUN = "launchctl.run_id"
LABEL_QUEUE = "launchctl.queue"
LABEL_AGENT = "launchctl.agent"
CACHE_MOUNT = "/launchctl-cache"
LOG_START_FILE = "container_log_start"  # where in the run's log its container's output begins
ENGINE_HINT = "start it (e.g. `dockerd`, or scripts/services.sh docker) and relaunch"

# What a queue (or a launch) may set in ``resource_args.local-container``: docker run's
# options as W&B's local-container runner takes them (W&B's allow-list,
# wandb/sdk/launch/utils.py _DOCKER_ALLOWED_RESOURCE_ARGS, less the names docker run has
# no option for), and launchctl's own: volume and network (an admin's, checked), builder
# and max_run_time.
OPTIONS = frozenset(
    {
        "env",
        "e",
        "gpus",
        "cpus",
        "cpu-period",
        "cpu-quota",
        "cpu-shares",
        "cpuset-cpus",
        "cpuset-mems",
        "memory",
        "memory-reservation",
        "memory-swap",
        "shm-size",
        "ulimit",
        "workdir",
        "name",
        "pids-limit",
        "platform",
        "volume",
        "network",
        "builder",
        "max_run_time",
        "rm",
    }
)
# docker run's short names that W&B's allow-list takes, and the option each stands for.
SHORT = {"m": "memory", "w": "workdir"}
# Options W&B's docs show for docker queues that change nothing here, with why: accepted,
# and noted in `queue show`.
NO_OPS = {
    "rm": "launchctl removes a run's container once its end is recorded"
    " (the container stays until then, for its exit code)",
}
# Names W&B's allow-list takes that are no docker run option: docker run refuses them
# when W&B's runner passes them on, so they are refused here when written, saying so.
NOT_DOCKER = {
    "cpu": "docker run has no --cpu option (W&B passes it on and docker refuses it); write cpus",
    "command": "docker run has no --command option (W&B passes it on and docker refuses"
    " it); the command is the job's entry point and the launch's args",
}


def option_name(raw: Any) -> str:
    """An option's name as W&B's validator reads it: ``--shm_size``, ``SHM-SIZE`` and
    ``shm-size`` are one option, ``m`` is ``memory`` and ``w`` is ``workdir``; launchctl's
    own names (``max_run_time``) stay as they are."""
    text = str(raw)
    if text in OPTIONS:
        return text
    name = text.strip().lstrip("-").replace("_", "-").lower()
    if name == "max-run-time":
        return "max_run_time"
    return SHORT.get(name, name)


def canonical_options(options: Any) -> Any:
    """``resource_args.local-container`` with each option under its one name (a mapping
    is returned as given when two of its names mean one option: validation refuses it)."""
    if not isinstance(options, dict):
        return options
    out: dict[str, Any] = {}
    for key, value in options.items():
        name = option_name(key)
        if name in out:
            return options
        out[name] = value
    return out


def option_problem(raw: Any, value: Any, seen: set[str]) -> str | None:
    """Why option ``raw`` (with ``value``) cannot be in ``resource_args.local-container``,
    in W&B's words where W&B refuses it too; ``seen`` collects the names read so far."""
    name = option_name(raw)
    if name in NOT_DOCKER:
        return f"option {name!r}: {NOT_DOCKER[name]}"
    if name not in OPTIONS:
        supported = ", ".join(sorted(n for n in OPTIONS if n != "e"))
        return (
            f"Unsupported resource_args.local-container option {name!r}."
            f" Supported options are: {supported}"
        )
    if name in seen:
        return f"option {name!r} is given twice (as {raw!r} and under another name)"
    seen.add(name)
    if name in NO_OPS:
        return None
    if isinstance(value, bool):  # W&B: every option it takes has a value
        return (
            f"resource_args.local-container option {name!r} must be a single string or"
            " numeric value"
        )
    return None


def docker_client() -> Any:
    """A docker-py client for the local engine; a RunnerError when none answers.

    An engine that is restarting gets ``LAUNCHCTL_ENGINE_WAIT`` seconds (default 30) to
    come back before the run fails, so a short engine restart does not fail runs.
    """
    import os
    import time

    import docker
    from docker.errors import DockerException

    deadline = time.monotonic() + float(os.environ.get("LAUNCHCTL_ENGINE_WAIT", "30"))
    while True:
        try:
            client = docker.from_env(timeout=120)
            client.ping()
            return client
        except DockerException as exc:
            if time.monotonic() >= deadline:
                raise RunnerError(
                    f"the Docker engine is not reachable ({_short(exc)}); {ENGINE_HINT}"
                ) from None
            time.sleep(1.0)


def _short(exc: BaseException) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return str(text).strip().splitlines()[-1][:300] if text else type(exc).__name__


def gpu_requests(value: Any) -> list[Any]:
    """``gpus``: ``all``, a count, or ``device=0,1`` (as ``docker run --gpus``)."""
    from docker.types import DeviceRequest

    text = str(value).strip().strip('"')
    if text == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if text.startswith("device="):
        ids = [d.strip() for d in text.removeprefix("device=").split(",") if d.strip()]
        if not ids:
            raise RunnerError(f"gpus {value!r} names no device", stage="agent")
        return [DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]
    if text.isdigit():
        return [DeviceRequest(count=int(text), capabilities=[["gpu"]])] if int(text) else []
    raise RunnerError(f"gpus must be all, a count or device=ID,...; got {value!r}", stage="agent")


_SIZE = re.compile(r"^\d+(\.\d+)?[bkmg]?$", re.I)


def _size(value: Any, what: str) -> str | int:
    if isinstance(value, int):
        return value
    text = str(value).strip().lower()
    if not _SIZE.match(text):
        raise RunnerError(f"{what} must be a size like 512m or 4g; got {value!r}", stage="agent")
    return text


def _whole(value: Any, what: str) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(str(value).strip())
    except ValueError:
        raise RunnerError(f"{what} must be a whole number; got {value!r}", stage="agent") from None


def _ulimits(value: Any) -> list[Any]:
    from docker.types import Ulimit

    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append(
                Ulimit(
                    name=item["name"],
                    soft=int(item["soft"]),
                    hard=int(item.get("hard") or item["soft"]),
                )
            )
            continue
        name, _, limits = str(item).partition("=")
        soft, _, hard = limits.partition(":")
        if not name or not soft.lstrip("-").isdigit():
            raise RunnerError(
                f"ulimit must look like nofile=1024:2048; got {item!r}", stage="agent"
            )
        out.append(Ulimit(name=name, soft=int(soft), hard=int(hard or soft)))
    return out


def _plain_env(value: Any) -> dict[str, str]:
    """``env`` without its secret references: the agent has put their values in launch.env."""
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if not isinstance(v, dict)}
    return env_from_option(value)


def volume_sources(value: Any) -> list[str]:
    """The host side of each ``volume``: ``SRC:DST[:MODE]`` strings (one or a list), or
    docker-py's ``{SRC: {bind: DST, mode: MODE}}``."""
    if isinstance(value, dict):
        return [str(k) for k in value]
    items = value if isinstance(value, list) else [value] if value else []
    return [str(item).split(":", 1)[0] for item in items]


def _is_host_path(source: str) -> bool:
    """A bind mount's source is a path; a bare name is a named volume (the engine's own)."""
    return source.startswith(("/", ".", "~")) or "/" in source


def store_mount_problem(
    volume: Any, cache: CacheMount | None, root: Path | None = None
) -> str | None:
    """Why these mounts would show the launchctl store to a container, or None.

    A run must learn nothing of the store: no host path that is the store's folder, is
    inside it or holds it, through a symbolic link or ``..``, as a volume or as the
    artifact cache.
    """
    from launchctl import paths

    found = [(s, "volume") for s in volume_sources(volume)]
    if cache is not None and cache.kind == "bind":
        found.append((cache.source, "artifact_cache"))
    for source, what in found:
        if _is_host_path(source) and paths.exposes_store(source, root):
            return (
                f"{what} {source!r} would show the launchctl store"
                f" ({paths.home() if root is None else root}) to the container: a run may"
                " not mount the store's folder, anything in it, or a folder that holds it"
            )
    return None


def config_mount_problem(config: dict[str, Any]) -> str | None:
    """``store_mount_problem`` for a queue config as written: its literal volumes and its
    artifact cache (a value with a template field or a macro is checked when a run starts)."""

    def literal(value: Any) -> bool:
        return isinstance(value, str) and "{{" not in value and "${" not in value

    options = (config.get("resource_args") or {}).get("local-container") or {}
    volume = options.get("volume") if isinstance(options, dict) else None
    sources = [v for v in volume_sources(volume) if literal(v)]
    cache = config.get("artifact_cache")
    if isinstance(cache, dict):
        cache = cache.get("host_path")
    mount = CacheMount(str(cache), "bind", CACHE_MOUNT) if literal(cache) else None
    return store_mount_problem(sources, mount)


def container_options(launch: Launch) -> dict[str, Any]:
    """docker-py ``containers.create`` keyword arguments for a launch."""
    args = canonical_options(launch.resource_args)
    env = dict(launch.env)
    # A bare NAME in the list passes the agent's value through: the agent put it (or,
    # absent there, nothing) in launch.env already, as `docker run -e NAME` does.
    env.update(_plain_env(args.get("env")))
    env.update(env_from_option(args.get("e")))
    labels = {LABEL_RUN: launch.run["id"], LABEL_QUEUE: launch.run.get("queue_name") or ""}
    if launch.agent_id:
        labels[LABEL_AGENT] = launch.agent_id
    opts: dict[str, Any] = {
        "image": launch.image,
        "environment": env,
        "labels": labels,
        "detach": True,
    }
    if launch.entrypoint:
        opts["entrypoint"] = launch.entrypoint
    if launch.args:
        opts["command"] = launch.args
    # cpus, memory and gpus come through the run's limits: its asks capped by the queue.
    limits = launch.limits
    gpus = limits.gpus if limits.gpus is not None else args.get("gpus")
    if launch.devices is not None:  # the agent gave it these GPUs: exactly these
        if launch.devices:
            opts["device_requests"] = gpu_requests("device=" + ",".join(launch.devices))
    elif gpus is not None:
        opts["device_requests"] = gpu_requests(gpus)
    cpus = limits.cpus if limits.cpus is not None else args.get("cpus")
    if cpus is not None:
        try:
            opts["nano_cpus"] = int(float(cpus) * 1e9)
        except (TypeError, ValueError):
            raise RunnerError(f"cpus must be a number; got {cpus!r}", stage="agent") from None
    if limits.memory is not None:
        opts["mem_limit"] = limits.memory
    elif "memory" in args:
        opts["mem_limit"] = _size(args["memory"], "memory")
    for option, keyword in (("cpu-period", "cpu_period"), ("cpu-quota", "cpu_quota"),
                            ("cpu-shares", "cpu_shares")):  # fmt: skip
        if option in args:
            opts[keyword] = _whole(args[option], option)
    for option, keyword in (("cpuset-cpus", "cpuset_cpus"), ("cpuset-mems", "cpuset_mems")):
        if option in args:
            opts[keyword] = str(args[option])
    if "memory-reservation" in args:
        opts["mem_reservation"] = _size(args["memory-reservation"], "memory-reservation")
    if "memory-swap" in args:  # -1: no limit on swap, as docker run reads it
        swap = args["memory-swap"]
        opts["memswap_limit"] = -1 if str(swap).strip() == "-1" else _size(swap, "memory-swap")
    if "shm-size" in args:
        opts["shm_size"] = _size(args["shm-size"], "shm-size")
    if "ulimit" in args:
        opts["ulimits"] = _ulimits(args["ulimit"])
    if "workdir" in args:
        opts["working_dir"] = str(args["workdir"])
    if "name" in args:
        opts["name"] = str(args["name"])
    if "pids-limit" in args:
        opts["pids_limit"] = int(args["pids-limit"])
    if "platform" in args:
        opts["platform"] = str(args["platform"])
    if "network" in args:
        opts["network"] = str(args["network"])
    problem = store_mount_problem(args.get("volume"), launch.cache)
    if problem is not None:
        raise RunnerError(problem, stage="agent")
    volumes = args.get("volume")
    if volumes:
        opts["volumes"] = volumes if isinstance(volumes, list | dict) else [volumes]
    if launch.cache is not None:
        from docker.types import Mount

        opts["mounts"] = [Mount(launch.cache.target, launch.cache.source, type=launch.cache.kind)]
    if launch.wandb_dir is not None:
        from docker.types import Mount

        opts.setdefault("mounts", []).append(
            Mount(WANDB_DIR_MOUNT, str(wandb_dir_for(launch.wandb_dir)), type="bind")
        )
    if launch.metrics_dir is not None:  # a sweep trial's metrics file (issue 15)
        from docker.types import Mount

        opts.setdefault("mounts", []).append(
            Mount(METRICS_MOUNT, str(wandb_dir_for(launch.metrics_dir)), type="bind")
        )
    return opts


def wandb_dir_for(path: Path) -> Path:
    """Make the run's W&B folder (in the run's own folder): writable by whichever user the
    image runs as (the store's home above it stays private), and never a link."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise RunnerError(f"{path} is not a folder: cannot keep the run's W&B files", stage="agent")
    os.chmod(path, 0o777)
    return path


# Exit codes of a container stopped from outside: SIGKILL (docker kill, the engine's
# shutdown after its grace) and SIGTERM (docker stop, the engine's shutdown).
KILLED_FROM_OUTSIDE = (137, 143)
ENGINE_BACK_S = 300.0


def exit_of(attrs: dict[str, Any]) -> Exit:
    """How a stopped container ended; ``preempted`` when it was stopped from outside.

    The agent only asks whether it was preempted when it did not stop the run itself.
    """
    state = attrs.get("State") or {}
    code = int(state.get("ExitCode", -1))
    if state.get("OOMKilled"):
        return Exit(code=code, message=f"out of memory (exit code {code})")
    if code in KILLED_FROM_OUTSIDE:
        return Exit(code=code, message=f"stopped from outside (exit code {code})", preempted=True)
    error = state.get("Error") or None
    return Exit(code=code, message=error)


class ContainerHandle:
    """A started (or adopted) container: a thread copies its logs into the run's log, another
    waits for its end, and both ride out a restart of the Docker engine."""

    def __init__(
        self,
        container: Any,
        log_path: Path,
        on_exit: Callable[[], None],
        secrets: Sequence[str] = (),
        since: float | None = None,
        copied: int = 0,
    ) -> None:
        self.container = container
        self.pid: int | None = None
        self.pid_started: str | None = None
        self.container_id: str = container.id
        self._log_path = log_path
        self._secrets = list(secrets)
        self._masker = Masker(self._secrets)
        # The log is followed from the container's first byte, skipping the ``copied``
        # bytes (of its masked output) already in the run's log: an adopted run's log, or
        # one followed again after an engine restart, gets every line once. ``since``: a
        # run started before launchctl noted where its output begins; followed by time.
        self._since = since
        self._copied = copied
        self._exit: Exit | None = None
        self._log_error: str | None = None  # the log could not be written: the run stopped
        self._stop_thread: threading.Thread | None = None
        self._done = threading.Event()
        self._logs = self._follow_logs()
        self._waiter = threading.Thread(target=self._wait, args=(on_exit,), daemon=True)
        self._waiter.start()

    def _follow_logs(self) -> threading.Thread:
        thread = threading.Thread(target=self._copy_logs, args=(self._since,), daemon=True)
        thread.start()
        return thread

    def _copy_logs(self, since: float | None) -> None:
        # One Masker for the whole stream: a value split across chunks is still masked.
        masker = Masker(self._secrets)
        kwargs: dict[str, Any] = {"stream": True, "follow": True}
        if since is not None:
            kwargs["since"] = since
        skip = self._copied if since is None else 0
        failed: OSError | None = None
        with open(self._log_path, "ab", buffering=0) as log:
            fd = log.fileno()

            def write(out: bytes) -> None:
                nonlocal skip
                if skip:  # already in the log (an adopted run, an engine restart)
                    cut = min(skip, len(out))
                    out, skip = out[cut:], skip - cut
                logfile.write_all(fd, out)
                self._copied += len(out)

            with contextlib.suppress(Exception):  # the engine's stream ended, or broke
                stream = self.container.logs(**kwargs)
                for chunk in stream:
                    try:
                        write(masker.feed(chunk))
                    except OSError as exc:
                        failed = exc
                        stream.close()
                        break
            if failed is None:
                try:
                    write(masker.flush())
                except OSError as exc:
                    failed = exc
            if failed is not None:  # a full disk: free what the log took, stop the run
                self._log_error = logfile.give_back_space(fd, self._log_path, failed, note=False)
                with contextlib.suppress(Exception):
                    self.container.kill()

    def _wait(self, on_exit: Callable[[], None]) -> None:
        try:
            self._exit = self._wait_for_exit()
        except Exception as exc:  # never leave the run unrecorded, whatever the engine does
            self._exit = Exit(code=None, message=f"lost the container: {_short(exc)}")
        finally:
            if self._exit is not None and self._exit.message:
                self._exit.message = self._masker.mask_text(self._exit.message)
            self._logs.join(timeout=30)
            if self._log_error is not None:  # it was killed because its log could not be
                self._exit = Exit(code=None, message=self._log_error)  # written: not preempted
            # The container stays until its end is recorded (release): an agent killed
            # in between leaves it for the next one to read the exit code from.
            self._done.set()
            on_exit()

    def release(self) -> None:
        """The run's end is recorded: remove the container (later, if the engine is away)."""
        try:
            self.container.remove(force=True)
        except Exception as exc:
            if "No such container" not in str(exc):
                threading.Thread(target=self._remove, daemon=True).start()

    def _wait_for_exit(self) -> Exit:
        """The container's end, following it through engine restarts.

        Engine calls can fail with docker's errors or with the HTTP library's (a socket
        that vanished while the engine restarts), so any failure means: look again.
        """
        while True:
            try:
                self.container.wait()
                self.container.reload()
                return exit_of(self.container.attrs)
            except Exception as exc:
                lost = self._masker.mask_text(_short(exc))
            # The engine went away (a restart?): wait for it, then look again.
            if not self._engine_back():
                return Exit(code=None, message=f"lost the Docker engine: {lost}")
            try:
                self.container.reload()
            except Exception:
                return Exit(code=None, message="the container is gone after an engine restart")
            if self.container.status != "running":
                return exit_of(self.container.attrs)
            # It survived the restart (live-restore): follow its logs and wait again.
            self._logs.join(timeout=5)
            exact = self._since is None  # from where the log stands; else by time
            self._logs = self._follow_logs() if exact else self._follow_logs_since_now()

    def _remove(self) -> None:
        """Logs are kept in the run's log file; the container itself goes (once the engine
        answers again, if it is restarting)."""
        for _ in range(2):
            try:
                self.container.remove(force=True)
                return
            except Exception as exc:
                if "No such container" in str(exc) or not self._engine_back():
                    return

    def _follow_logs_since_now(self) -> threading.Thread:
        import time

        self._since = time.time()
        return self._follow_logs()

    def _engine_back(self) -> bool:
        import time

        deadline = time.monotonic() + ENGINE_BACK_S
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if self.container.client.ping():
                    return True
            time.sleep(1.0)
        return False

    def poll(self) -> Exit | None:
        return self._exit if self._done.is_set() else None

    def stop(self, grace_s: float) -> None:
        if self._done.is_set() or self._stop_thread is not None:
            return

        def stop() -> None:
            with contextlib.suppress(Exception):
                self.container.stop(timeout=max(1, round(grace_s)))

        self._stop_thread = threading.Thread(target=stop, daemon=True)
        self._stop_thread.start()


class EndedContainer:
    """A container that ended while no agent watched: its exit, and removal once recorded."""

    def __init__(self, container: Any, result: Exit) -> None:
        self.container = container
        self.pid: int | None = None
        self.pid_started: str | None = None
        self._result = result

    def poll(self) -> Exit | None:
        return self._result

    def stop(self, grace_s: float) -> None:
        pass

    def release(self) -> None:
        with contextlib.suppress(Exception):
            self.container.remove(force=True)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class PullProgress:
    """Folds the engine's streamed pull events into a short account for the run's log: at
    most one aggregate line every ``every_s`` seconds, and a summary at the end."""

    LAYER_STATUSES = (
        "Pulling fs layer", "Waiting", "Downloading", "Verifying Checksum",
        "Download complete", "Extracting", "Pull complete", "Already exists",
    )  # fmt: skip
    DONE = ("Pull complete", "Already exists")

    def __init__(
        self, image: str, every_s: float = 2.0, clock: Callable[[], float] | None = None
    ) -> None:
        import time

        self.image = image
        self.every_s = every_s
        self._clock = clock or time.monotonic
        self._start = self._clock()
        self._last = self._start
        self._layers: dict[str, str] = {}  # layer id: its latest status
        self._current: dict[str, int] = {}
        self._total: dict[str, int] = {}

    def feed(self, event: dict[str, Any]) -> str | None:
        """Take one event; return a line for the log when one is due, else None."""
        status = str(event.get("status", ""))
        layer = str(event.get("id", ""))
        if not layer or not status.startswith(self.LAYER_STATUSES):
            return None
        if self._layers.get(layer) not in self.DONE:
            self._layers[layer] = status
        detail = event.get("progressDetail") or {}
        if status.startswith("Downloading") and isinstance(detail, dict):
            total, current = detail.get("total"), detail.get("current")
            if isinstance(total, int) and total > 0:
                self._total[layer] = total
            if isinstance(current, int):
                self._current[layer] = current
        elif status.startswith(("Download complete", "Extracting", "Pull complete")) and (
            layer in self._total
        ):
            self._current[layer] = self._total[layer]
        now = self._clock()
        if now - self._last < self.every_s:
            return None
        self._last = now
        return f"launchctl: pulling {self.image}: {self.state()} [{now - self._start:.1f}s]"

    def state(self) -> str:
        done = sum(1 for s in self._layers.values() if s.startswith(self.DONE))
        current = sum(self._current.values())
        total = sum(self._total.values())
        return f"{done}/{len(self._layers)} layers, {_mb(current)} of {_mb(total)}"

    def summary(self) -> str:
        took = self._clock() - self._start
        count = len(self._layers)
        size = _mb(sum(self._total.values()))
        return (
            f"launchctl: pulled {self.image} in {took:.1f}s "
            f"({count} layer{'s' if count != 1 else ''}, {size})"
        )


@register(options=OPTIONS, check_config=config_mount_problem)  # no mount shows the store
class LocalContainerRunner:
    resource = "local-container"

    def __init__(self, client: Any | None = None) -> None:
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client()
        return self._client

    def ensure_image(
        self, image: str, log: Callable[[bytes], Any], auth: dict[str, str] | None = None
    ) -> None:
        """Pull ``image`` unless the engine has it, writing progress into the run's log."""
        from docker.errors import DockerException, ImageNotFound

        try:
            self.client.images.get(image)
            return
        except ImageNotFound:
            pass
        except DockerException as exc:
            raise RunnerError(
                f"the Docker engine failed to look up {image}: {_short(exc)}"
            ) from None
        repo, tag = _split(image)
        log(f"launchctl: pulling {image}\n".encode())
        progress = PullProgress(image)
        try:
            for line in self.client.api.pull(
                repo, tag=tag, stream=True, decode=True, auth_config=auth or None
            ):
                if "error" in line:
                    raise RunnerError(pull_failed(image, str(line["error"])))
                note = progress.feed(line)
                if note is not None:
                    log(f"{note}\n".encode())
        except DockerException as exc:
            raise RunnerError(pull_failed(image, _short(exc))) from None
        log(f"{progress.summary()}\n".encode())

    def create(self, launch: Launch) -> Any:
        from docker.errors import DockerException

        if not launch.image:
            raise RunnerError("a container run needs an image", stage="agent")
        opts = container_options(launch)
        image = opts.pop("image")
        opts.pop("detach")
        try:
            return self.client.containers.create(image, **opts)
        except DockerException as exc:
            reason = Masker(launch.secrets).mask_text(_short(exc))  # it may quote the env
            raise RunnerError(f"could not create the container: {reason}") from None

    @staticmethod
    def _note_log_start(log_path: Path) -> None:
        """Note where this attempt's container output begins in the run's log (the log may
        hold a pull, a build or an earlier attempt): an agent that adopts it skips what is
        already there."""
        note = log_path.parent / LOG_START_FILE
        with contextlib.suppress(OSError):
            note.unlink(missing_ok=True)  # never an earlier attempt's
            tmp = note.with_name(note.name + ".tmp")
            tmp.write_text(f"{log_path.stat().st_size}\n")
            tmp.replace(note)

    def start(self, launch: Launch) -> ContainerHandle:
        from docker.errors import DockerException

        problem = store_mount_problem(launch.resource_args.get("volume"), launch.cache)
        if problem is not None:  # before anything is pulled or created
            raise RunnerError(problem, stage="agent")
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(launch.log_path, "ab", buffering=0) as log:
            self.ensure_image(str(launch.image), log.write, launch.registry_auth)
        container = self.create(launch)
        self._note_log_start(launch.log_path)
        try:
            container.start()
        except DockerException as exc:
            with contextlib.suppress(DockerException):
                container.remove(force=True)
            reason = Masker(launch.secrets).mask_text(_short(exc))
            raise RunnerError(f"the container did not start: {reason}") from None
        return ContainerHandle(container, launch.log_path, launch.on_exit, launch.secrets)

    def adopt(
        self,
        run: dict[str, Any],
        log_path: Path,
        on_exit: Callable[[], None],
        secrets: Sequence[str] = (),
    ) -> ContainerHandle | EndedContainer | None:
        """Find a lost agent's container by its label: follow it, or read how it ended."""
        from docker.errors import DockerException

        found = self.client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run['id']}"})
        if not found:
            return None
        container = found[0]
        # What of its output the log holds already: followed on from its last byte.
        copied = _copied_so_far(log_path)
        since = None
        if copied is None:  # started by a launchctl that did not note it: by time
            since = log_path.stat().st_mtime if log_path.exists() else None
        if container.status in ("running", "restarting", "paused"):
            return ContainerHandle(
                container, log_path, on_exit, secrets, since=since, copied=copied or 0
            )
        if container.status == "created":  # never started: nothing ran
            with contextlib.suppress(DockerException):
                container.remove(force=True)
            return None
        # It ended while no agent watched: keep the rest of its logs, then its exit.
        masker = Masker(secrets)
        with open(log_path, "ab") as log, contextlib.suppress(DockerException):
            if copied is not None:
                log.write((masker.feed(container.logs()) + masker.flush())[copied:])
            else:
                rest = container.logs(since=since) if since else container.logs()
                log.write(masker.feed(rest) + masker.flush())
        result = exit_of(container.attrs)
        if result.message:
            result.message = masker.mask_text(result.message)
        return EndedContainer(container, result)


def _copied_so_far(log_path: Path) -> int | None:
    """How many bytes of its container's (masked) output the run's log holds, from the note
    written when the container started; None when there is no note to go by."""
    try:
        text = (log_path.parent / LOG_START_FILE).read_text()[:40].strip()
        size = log_path.stat().st_size
    except OSError:
        return None
    if not text.isdigit() or int(text) > size:
        return None
    return size - int(text)


def pull_failed(image: str, error: str) -> str:
    """The one line for a failed pull: for lack of network (issue 12, item 4), that this
    machine cannot reach the registry and the ways out (an image the engine has, a local
    registry), in the words the builder uses for a FROM; else the engine's own error."""
    from launchctl.images.progress import unreachable_registry

    offline = unreachable_registry(error)
    if offline is None:
        return f"pull of {image} failed: {error}"
    host, cause = offline
    where = f"the registry {host}" if host else "the image's registry"
    return (
        f"pull of {image} failed: this machine cannot reach {where} (offline?): run an image"
        " this engine already has (`docker images` lists them; `scripts/services.sh images`"
        " makes launchctl-test/python:bookworm), or push the image to a local registry"
        " (`scripts/services.sh registry` starts one on 127.0.0.1:5000) and run it by that"
        f" name ({cause})"
    )


def _split(image: str) -> tuple[str, str]:
    """``repo[:tag][@digest]`` -> (repo, tag); the tag defaults to latest."""
    if "@" in image:
        repo, digest = image.split("@", 1)
        return repo, digest
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = image.rsplit(":", 1)
        return repo, tag
    return image, "latest"
