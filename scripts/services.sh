#!/usr/bin/env bash
# Make real container infrastructure available on this machine (Debian 12, root):
#   docker    a Docker engine (docker.io 20.10, client /usr/bin/docker)
#   images    local base images launchctl-test/python:bookworm and
#             launchctl-test/busybox:latest (built once per machine, reused by name)
#   registry  a container registry on 127.0.0.1:5000 (Debian's docker-registry),
#             checked with a push/pull of localhost:5000/launchctl-test/busybox:latest
#   all       docker, images, registry, in that order
#   slurm     a one-node Slurm cluster on loopback (slurmctld, slurmd, munge); apart
#             from all (scripts/test.sh starts it separately)
#   chromium  Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)
#             for the web view's browser tests; apart from all (scripts/test.sh asks for it)
#   status    one line per service; exit 0 when all are up, 1 otherwise
# Idempotent: whatever is already running or built is reused. Nothing needs a
# container registry on the internet; only the configured Debian mirror is used.
set -euo pipefail

DOCKER=/usr/bin/docker               # the docker.io client; /usr/local/bin/docker (28.x) lacks buildx
DOCKERD_LOG=/var/log/launchctl-dockerd.log
PY_IMAGE=launchctl-test/python:bookworm
BB_IMAGE=launchctl-test/busybox:latest
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
REGISTRY_ADDR=127.0.0.1:5000
REGISTRY_URL=http://$REGISTRY_ADDR/v2/
REGISTRY_DIR=/var/lib/launchctl-registry
REGISTRY_CONFIG=$REGISTRY_DIR/config.yml
REGISTRY_LOG=/var/log/launchctl-registry.log
REGISTRY_TEST_IMAGE=localhost:5000/launchctl-test/busybox:latest
APT_LOG=/var/log/launchctl-apt.log
DEBOOTSTRAP_LOG=/var/log/launchctl-debootstrap.log
LOCK_FILE=/run/lock/launchctl-services.lock
WAIT_S=60

# Talk to this machine's engine, whatever the caller's environment says.
export DOCKER_HOST=unix:///var/run/docker.sock
unset DOCKER_CONTEXT
export PATH="$PATH:/usr/sbin:/sbin"

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- cleanup --
CLEANUP_DIRS=()
CREATED_POLICY_RC=0
cleanup() {
    local d m
    for d in "${CLEANUP_DIRS[@]}"; do
        [ -n "$d" ] && [ -d "$d" ] || continue
        # debootstrap mounts proc/sys inside its target; never rm -rf through them
        while read -r m; do umount -l "$m" 2>/dev/null || true; done \
            < <(awk -v d="$d" 'index($2, d"/") == 1 {print $2}' /proc/mounts | sort -r)
        rm -rf --one-file-system "$d" 2>/dev/null || true
    done
    if [ "$CREATED_POLICY_RC" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

take_lock() {
    mkdir -p "$(dirname "$LOCK_FILE")"
    exec 9>"$LOCK_FILE"
    if ! flock -n 9; then
        log "waiting for another services.sh run to finish"
        flock -w 900 9 || die "could not take $LOCK_FILE within 900 s"
    fi
}

# -------------------------------------------------------------------- apt --
APT_UPDATED=0
apt_install() {  # apt_install PKG...
    [ "$(id -u)" = 0 ] || die "installing $* needs root"
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update >>"$APT_LOG" 2>&1 \
            || die "apt-get update failed (see $APT_LOG)"
        APT_UPDATED=1
    fi
    # Keep package maintainer scripts from starting their own services: this
    # script starts dockerd/docker-registry itself with its own settings.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        CREATED_POLICY_RC=1
    fi
    log "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >>"$APT_LOG" 2>&1 \
        || die "apt-get install $* failed (see $APT_LOG)"
    if [ "$CREATED_POLICY_RC" = 1 ]; then rm -f /usr/sbin/policy-rc.d; CREATED_POLICY_RC=0; fi
}

# ----------------------------------------------------------------- docker --
docker_up() { timeout 10 "$DOCKER" info >/dev/null 2>&1; }

start_dockerd() {  # start_dockerd DRIVER -> 0 when the engine answers
    local driver=$1 pid i
    log "starting dockerd --storage-driver $driver (log: $DOCKERD_LOG)"
    printf '\n=== %s services.sh: dockerd --storage-driver %s\n' "$(date -Is)" "$driver" >>"$DOCKERD_LOG"
    # 9>&-: the daemon must not inherit (and so keep holding) our lock file
    setsid nohup dockerd --storage-driver "$driver" >>"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &
    pid=$!
    for ((i = 0; i < WAIT_S * 2; i++)); do
        if docker_up; then log "docker engine is up (dockerd pid $pid, storage $driver)"; return 0; fi
        kill -0 "$pid" 2>/dev/null || { log "dockerd --storage-driver $driver exited"; return 1; }
        sleep 0.5
    done
    log "dockerd --storage-driver $driver did not answer within ${WAIT_S}s; stopping it"
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    return 1
}

ensure_docker() {
    if [ ! -x "$DOCKER" ] || ! command -v dockerd >/dev/null 2>&1; then
        apt_install docker.io
        if [ ! -x "$DOCKER" ] || ! command -v dockerd >/dev/null 2>&1; then
            die "docker.io installed but $DOCKER or dockerd is still missing"
        fi
    fi
    if docker_up; then
        log "docker engine already up ($("$DOCKER" info --format '{{.ServerVersion}}, storage {{.Driver}}' 2>/dev/null))"
        return 0
    fi
    local pid i
    if pid=$(pgrep -x dockerd | head -n1) && [ -n "$pid" ]; then
        log "dockerd (pid $pid) is running but not answering yet; waiting up to ${WAIT_S}s"
        for ((i = 0; i < WAIT_S * 2; i++)); do
            docker_up && { log "docker engine is up (dockerd pid $pid)"; return 0; }
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -0 "$pid" 2>/dev/null \
            && die "dockerd (pid $pid) runs but $DOCKER info does not answer; stop it or check its log"
    fi
    # Prefer overlay2; reuse a vfs store if that is what an earlier fallback left.
    local drivers=(overlay2 vfs)
    if [ -d /var/lib/docker/vfs ] && [ ! -d /var/lib/docker/overlay2 ]; then drivers=(vfs overlay2); fi
    local d
    for d in "${drivers[@]}"; do
        if start_dockerd "$d"; then
            [ "$d" = overlay2 ] || log "NOTE: running with storage driver $d (overlay2 did not work)"
            return 0
        fi
    done
    local why
    why=$(grep -E 'level=(fatal|error)|failed to start' "$DOCKERD_LOG" 2>/dev/null | tail -n1 | cut -c1-200 || true)
    die "dockerd would not start with overlay2 or vfs${why:+: $why} (see $DOCKERD_LOG)"
}

# ----------------------------------------------------------------- images --
image_exists() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

# The configured Debian mirror (first URI serving suite bookworm), from both
# one-line (*.list) and deb822 (*.sources) apt sources. Prints "URI KEYRING".
debian_mirror() {
    local f files=()
    [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && files+=("$f")
    done
    [ "${#files[@]}" -gt 0 ] || return 1
    awk '
        function flush() {
            if (types ~ /(^|[ \t])deb([ \t]|$)/ && (" " suites " ") ~ /[ \t]bookworm[ \t]/ && uri != "" && enabled != "no" && !found) {
                print uri, (key == "" ? "-" : key); found = 1
            }
            types = suites = uri = key = enabled = ""
        }
        FNR == 1 { flush() }
        FILENAME ~ /\.sources$/ {
            if ($0 ~ /^[ \t]*$/) { flush(); next }
            if ($0 ~ /^#/) next
            k = tolower($1)
            if (k == "types:")    { sub(/^[^:]*:[ \t]*/, ""); types = $0 }
            if (k == "suites:")   { sub(/^[^:]*:[ \t]*/, ""); suites = $0 }
            if (k == "uris:")     { uri = $2 }
            if (k == "signed-by:"){ if ($2 ~ /^\//) key = $2 }
            if (k == "enabled:")  { enabled = tolower($2) }
            next
        }
        /^[ \t]*deb[ \t]/ && !found {
            i = 2; opts = ""
            if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) { opts = opts " " $i; i++ } opts = opts " " $i; i++ }
            if ($(i + 1) == "bookworm") {
                key = ""
                if (match(opts, /signed-by=[^ \]]+/)) key = substr(opts, RSTART + 10, RLENGTH - 10)
                print $i, (key == "" ? "-" : key); found = 1
            }
        }
        END { flush() }
    ' "${files[@]}" | head -n1 | grep .
}

new_tmpdir() {  # new_tmpdir NAME -> prints a fresh directory cleaned up on exit
    local d
    d=$(mktemp -d "/var/tmp/launchctl-$1.XXXXXX")
    CLEANUP_DIRS+=("$d")
    printf '%s\n' "$d"
}

import_rootfs() {  # import_rootfs DIR NAME CHANGE... ; imports as a temporary tag
    local dir=$1 name=$2; shift 2
    local changes=(--change "ENV PATH=$IMAGE_PATH") c
    for c in "$@"; do changes+=(--change "$c"); done
    tar --numeric-owner -C "$dir" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . \
        | "$DOCKER" import "${changes[@]}" - "$name" >/dev/null \
        || die "docker import of $name failed"
}

promote_image() {  # promote_image TMPNAME FINALNAME -- CHECK-COMMAND... ; verify then tag
    local tmp=$1 final=$2; shift 3
    local out
    if ! out=$(timeout 60 "$DOCKER" run --rm "$tmp" "$@" 2>&1); then
        "$DOCKER" rmi "$tmp" >/dev/null 2>&1 || true
        die "new image $final failed its check ($*): $(printf '%s' "$out" | tail -n1)"
    fi
    "$DOCKER" tag "$tmp" "$final"
    "$DOCKER" rmi "$tmp" >/dev/null
    printf '%s' "$out"
}

ensure_python_image() {
    if image_exists "$PY_IMAGE"; then log "image $PY_IMAGE already present"; return 0; fi
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    local mirror key dir arch out
    read -r mirror key < <(debian_mirror) \
        || die "no Debian bookworm mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/"
    arch=$(dpkg --print-architecture)
    dir=$(new_tmpdir python-rootfs)
    # shellcheck disable=SC2054  # --include takes a comma-separated list
    local opts=(--variant=minbase --arch="$arch"
        --include=python3,python3-venv,python3-pip,ca-certificates)
    if [ "$key" != - ] && [ -f "$key" ]; then opts+=(--keyring="$key"); fi
    log "debootstrap bookworm from $mirror (about a minute; log: $DEBOOTSTRAP_LOG)"
    printf '\n=== %s debootstrap %s bookworm %s\n' "$(date -Is)" "${opts[*]}" "$mirror" >>"$DEBOOTSTRAP_LOG"
    debootstrap "${opts[@]}" bookworm "$dir" "$mirror" >>"$DEBOOTSTRAP_LOG" 2>&1 \
        || die "debootstrap from $mirror failed: $(grep -E '^(E|W):' "$DEBOOTSTRAP_LOG" | tail -n1 | cut -c1-200) (see $DEBOOTSTRAP_LOG)"
    [ -x "$dir/usr/bin/python3" ] || die "debootstrap finished but the rootfs has no python3"
    if [ ! -e "$dir/usr/bin/python" ] && [ ! -e "$dir/usr/local/bin/python" ]; then
        mkdir -p "$dir/usr/local/bin"
        ln -s /usr/bin/python3 "$dir/usr/local/bin/python"
    fi
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/var/log/*.log 2>/dev/null || true
    log "importing $PY_IMAGE"
    local tmp="launchctl-test/python:building-$$"
    import_rootfs "$dir" "$tmp" 'ENV LANG=C.UTF-8' 'CMD ["python3"]'
    out=$(promote_image "$tmp" "$PY_IMAGE" -- python -c 'print(1)')
    [ "$out" = 1 ] || { "$DOCKER" rmi "$PY_IMAGE" >/dev/null 2>&1 || true; die "$PY_IMAGE check printed '$out', not 1"; }
    log "image $PY_IMAGE built; python runs in it"
}

ensure_busybox_image() {
    if image_exists "$BB_IMAGE"; then log "image $BB_IMAGE already present"; return 0; fi
    local work dir deb applet out
    work=$(new_tmpdir busybox-deb)
    log "fetching busybox-static"
    if ! (cd "$work" && apt-get download busybox-static >>"$APT_LOG" 2>&1); then
        if [ "$APT_UPDATED" = 0 ]; then
            log "apt-get update"
            apt-get update >>"$APT_LOG" 2>&1 || die "apt-get update failed (see $APT_LOG)"
            APT_UPDATED=1
        fi
        (cd "$work" && apt-get download busybox-static >>"$APT_LOG" 2>&1) \
            || die "apt-get download busybox-static failed (see $APT_LOG)"
    fi
    deb=$(find "$work" -maxdepth 1 -name 'busybox-static_*.deb' | head -n1)
    dpkg-deb -x "$deb" "$work/x"
    [ -x "$work/x/bin/busybox" ] || die "busybox-static package has no bin/busybox"
    dir=$(new_tmpdir busybox-rootfs)
    mkdir -p "$dir"/bin "$dir"/etc "$dir"/root "$dir"/tmp "$dir"/var/tmp
    chmod 1777 "$dir"/tmp "$dir"/var/tmp
    cp "$work/x/bin/busybox" "$dir/bin/busybox"
    for applet in $("$dir/bin/busybox" --list); do
        [ "$applet" = busybox ] || [ -e "$dir/bin/$applet" ] || ln -s busybox "$dir/bin/$applet"
    done
    [ -L "$dir/bin/sh" ] || die "busybox has no sh applet"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$dir/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
    log "importing $BB_IMAGE"
    local tmp="launchctl-test/busybox:building-$$"
    import_rootfs "$dir" "$tmp" 'CMD ["sh"]'
    out=$(promote_image "$tmp" "$BB_IMAGE" -- sh -c 'echo ok')
    [ "$out" = ok ] || { "$DOCKER" rmi "$BB_IMAGE" >/dev/null 2>&1 || true; die "$BB_IMAGE check printed '$out', not ok"; }
    log "image $BB_IMAGE built; sh runs in it"
}

ensure_images() {
    ensure_python_image
    ensure_busybox_image
}

# --------------------------------------------------------------- registry --
registry_up() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -m 3 -o /dev/null "$REGISTRY_URL" 2>/dev/null
    else
        timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5000 &&
            printf "GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3 &&
            head -n1 <&3 | grep -q " 200 "' 2>/dev/null
    fi
}

write_registry_config() {
    mkdir -p "$REGISTRY_DIR/data"
    local want
    want=$(cat <<CFG
# written by scripts/services.sh
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $REGISTRY_DIR/data
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
CFG
)
    if [ ! -f "$REGISTRY_CONFIG" ] || [ "$(cat "$REGISTRY_CONFIG")" != "$want" ]; then
        log "writing $REGISTRY_CONFIG"
        printf '%s\n' "$want" >"$REGISTRY_CONFIG"
    fi
}

ensure_registry() {
    if registry_up; then
        log "registry already answers on $REGISTRY_URL"
    else
        command -v docker-registry >/dev/null 2>&1 || apt_install docker-registry
        command -v docker-registry >/dev/null 2>&1 || die "docker-registry installed but not on PATH"
        write_registry_config
        log "starting docker-registry on $REGISTRY_ADDR (log: $REGISTRY_LOG)"
        printf '\n=== %s services.sh: docker-registry serve %s\n' "$(date -Is)" "$REGISTRY_CONFIG" >>"$REGISTRY_LOG"
        setsid nohup docker-registry serve "$REGISTRY_CONFIG" >>"$REGISTRY_LOG" 2>&1 </dev/null 9>&- &
        local pid=$! i ok=0
        for ((i = 0; i < WAIT_S * 2; i++)); do
            if registry_up; then ok=1; break; fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if [ "$ok" = 0 ]; then
            kill "$pid" 2>/dev/null || true
            die "docker-registry did not answer on $REGISTRY_URL: $(tail -n1 "$REGISTRY_LOG" | cut -c1-200) (see $REGISTRY_LOG)"
        fi
        log "registry is up on $REGISTRY_URL (pid $pid)"
    fi
    # Check it end to end with the engine: push, drop the local tag, pull back.
    ensure_busybox_image
    log "checking push/pull of $REGISTRY_TEST_IMAGE"
    "$DOCKER" tag "$BB_IMAGE" "$REGISTRY_TEST_IMAGE"
    local out
    out=$("$DOCKER" push "$REGISTRY_TEST_IMAGE" 2>&1) || die "docker push $REGISTRY_TEST_IMAGE failed: $(printf '%s' "$out" | tail -n1)"
    "$DOCKER" rmi "$REGISTRY_TEST_IMAGE" >/dev/null
    out=$("$DOCKER" pull "$REGISTRY_TEST_IMAGE" 2>&1) || die "docker pull $REGISTRY_TEST_IMAGE failed: $(printf '%s' "$out" | tail -n1)"
    log "registry push/pull works"
}

# ------------------------------------------------------------------ slurm --
# A one-node Slurm cluster on loopback (Debian's slurmctld, slurmd, slurm-client and
# munge, Slurm 22.05): munged as the munge user, then slurmctld and slurmd as root with
# the slurm.conf below (state and spool in $SLURM_DIR). Reused when sinfo answers.
SLURM_DIR=/var/lib/launchctl-slurm
SLURM_CONF=/etc/slurm/slurm.conf
SLURM_LOG_DIR=/var/log
slurm_up() { timeout 10 sinfo -h -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated|completing)'; }

write_slurm_conf() {
    local host want
    host=$(hostname -s)
    # MinJobAge keeps an ended job in slurmctld's memory for an hour: there is no slurmdbd
    # (no sacct), so squeue/scontrol are where launchctl reads how a job ended.
    # JobAcctGatherParams=OverMemoryKill makes the node kill a job above its --mem.
    want=$(cat <<CFG
# written by scripts/services.sh (launchctl's one-node test cluster)
ClusterName=launchctl
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=/run/launchctl-slurmctld.pid
SlurmdPidFile=/run/launchctl-slurmd.pid
SlurmctldLogFile=$SLURM_LOG_DIR/launchctl-slurmctld.log
SlurmdLogFile=$SLURM_LOG_DIR/launchctl-slurmd.log
MinJobAge=3600
DefMemPerCPU=500
KillWait=5
ReturnToService=2
MpiDefault=none
NodeName=$host NodeAddr=127.0.0.1 CPUs=2 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CFG
)
    mkdir -p "$(dirname "$SLURM_CONF")" "$SLURM_DIR/state" "$SLURM_DIR/spool"
    if [ ! -f "$SLURM_CONF" ] || [ "$(cat "$SLURM_CONF")" != "$want" ]; then
        log "writing $SLURM_CONF"
        printf '%s\n' "$want" >"$SLURM_CONF"
        SLURM_CONF_CHANGED=1
    fi
}

SLURM_CONF_CHANGED=0
stop_pidfile() {  # stop_pidfile FILE: end the daemon this script started, and wait for it
    local pid i
    pid=$(cat "$1" 2>/dev/null) || return 0
    kill "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 40; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
}

ensure_slurm() {
    if slurm_up; then
        write_slurm_conf
        if [ "$SLURM_CONF_CHANGED" = 1 ]; then
            log "restarting slurmctld and slurmd with the new $SLURM_CONF"
            stop_pidfile /run/launchctl-slurmctld.pid; stop_pidfile /run/launchctl-slurmd.pid
        else
            log "slurm already up ($(sinfo -h -o '%P %D %T' 2>/dev/null | head -n1))"
            return 0
        fi
    fi
    local missing=()
    command -v slurmctld >/dev/null 2>&1 || missing+=(slurmctld)
    command -v slurmd >/dev/null 2>&1 || missing+=(slurmd)
    command -v sbatch >/dev/null 2>&1 || missing+=(slurm-client)
    command -v munged >/dev/null 2>&1 || missing+=(munge)
    [ ${#missing[@]} = 0 ] || apt_install "${missing[@]}"
    if [ ! -s /etc/munge/munge.key ]; then
        log "making /etc/munge/munge.key"
        runuser -u munge -- /usr/sbin/mungekey --create >/dev/null 2>&1 \
            || die "munge installed but /etc/munge/munge.key is missing and mungekey failed"
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    if ! pgrep -x munged >/dev/null; then
        log "starting munged"
        runuser -u munge -- /usr/sbin/munged 9>&- || die "munged would not start (see /var/log/munge/munged.log)"
    fi
    write_slurm_conf
    if ! pgrep -x slurmctld >/dev/null; then
        log "starting slurmctld (log: $SLURM_LOG_DIR/launchctl-slurmctld.log)"
        setsid nohup slurmctld >/dev/null 2>&1 </dev/null 9>&- &
    fi
    if ! pgrep -x slurmd >/dev/null; then
        log "starting slurmd (log: $SLURM_LOG_DIR/launchctl-slurmd.log)"
        setsid nohup slurmd >/dev/null 2>&1 </dev/null 9>&- &
    fi
    local i
    for ((i = 0; i < WAIT_S * 2; i++)); do
        if slurm_up; then log "slurm is up ($(sinfo -h -o '%P %D %T' | head -n1))"; return 0; fi
        sleep 0.5
    done
    die "slurm did not show an idle node within ${WAIT_S}s: $(sinfo -h -o '%T %E' 2>&1 | head -n1) (see $SLURM_LOG_DIR/launchctl-slurmctld.log)"
}

# --------------------------------------------------------------- chromium --
CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver
chromium_up() {
    [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ] && timeout 20 "$CHROMEDRIVER" --version >/dev/null 2>&1
}

ensure_chromium() {
    if chromium_up; then
        log "chromium already installed ($(timeout 20 "$CHROMEDRIVER" --version 2>/dev/null | head -n1 | cut -c1-80))"
        return 0
    fi
    apt_install chromium chromium-driver
    chromium_up || die "chromium and chromium-driver installed but $CHROMIUM or $CHROMEDRIVER does not run"
    log "chromium installed ($(timeout 20 "$CHROMEDRIVER" --version 2>/dev/null | head -n1 | cut -c1-80))"
}

# ----------------------------------------------------------------- status --
status() {
    local rc=0 info
    if [ -x "$DOCKER" ] && info=$(timeout 10 "$DOCKER" info --format '{{.ServerVersion}}, storage {{.Driver}}' 2>/dev/null); then
        echo "docker:   up ($DOCKER, engine $info)"
        local img
        for img in "$PY_IMAGE" "$BB_IMAGE"; do
            if image_exists "$img"; then echo "image:    present $img"
            else echo "image:    MISSING $img"; rc=1; fi
        done
    else
        echo "docker:   DOWN ($DOCKER info does not answer)"
        echo "image:    unknown $PY_IMAGE (engine down)"
        echo "image:    unknown $BB_IMAGE (engine down)"
        rc=1
    fi
    if registry_up; then echo "registry: up ($REGISTRY_URL)"
    else echo "registry: DOWN (nothing answers on $REGISTRY_URL)"; rc=1; fi
    if slurm_up; then echo "slurm:    up ($(sinfo -h -o '%P %D %T' 2>/dev/null | head -n1))"
    else echo "slurm:    DOWN (sinfo shows no idle node; scripts/services.sh slurm)"; fi
    if chromium_up; then echo "chromium: present ($CHROMIUM, $CHROMEDRIVER)"
    else echo "chromium: MISSING ($CHROMIUM or $CHROMEDRIVER; scripts/services.sh chromium)"; fi
    return "$rc"
}

usage() {
    echo "usage: $0 {docker|images|registry|all|slurm|chromium|status}" >&2
    exit 2
}

main() {
    [ $# -eq 1 ] || usage
    case $1 in
        status)   status ;;
        docker)   take_lock; ensure_docker ;;
        images)   take_lock; ensure_docker; ensure_images ;;
        registry) take_lock; ensure_docker; ensure_registry ;;
        all)      take_lock; ensure_docker; ensure_images; ensure_registry ;;
        slurm)    take_lock; ensure_slurm ;;
        chromium) take_lock; ensure_chromium ;;
        -h|--help|help) usage ;;
        *) usage ;;
    esac
}

main "$@"
