"""The two small shell scripts every DeepSpeed pod runs, shipped in the job's ConfigMap.

torchrun exits 1 whenever a worker fails, whatever the worker's own exit status was, so the
Job's `podFailurePolicy` could never see the worker's configuration-error (78) or preemption
(75) codes. `run-rank.sh` wraps each worker process and records those two codes in a
directory; `launch-node.sh`, the container's entrypoint, waits for the rendezvous host, runs
torchrun, forwards SIGTERM to it, and exits with the recorded code. The Helm chart ships
byte-identical copies in `helm/dlaunch/files/` (a test compares them).
"""

from __future__ import annotations

LAUNCH_NODE_SCRIPT = "launch-node.sh"
RUN_RANK_SCRIPT = "run-rank.sh"

LAUNCH_NODE_SH = """\
#!/bin/sh
# Entrypoint of every dlaunch DeepSpeed pod: launch-node.sh NODE-AGENT-COMMAND...
# 1. wait until the rendezvous host (pod 0) resolves and, seen from other pods, accepts TCP;
# 2. run the node agent (torchrun) and forward SIGTERM to it, so workers can checkpoint;
# 3. exit 78 (configuration error) or 75 (preempted) when a worker reported it through
#    run-rank.sh, since torchrun itself exits 1 for any worker failure.
set -u
python -m training.rendezvous_wait --host "$DLAUNCH_RDZV_HOST" --port "$DLAUNCH_RDZV_PORT" \\
    --rank "${JOB_COMPLETION_INDEX:-0}" --timeout "$DLAUNCH_RDZV_WAIT_TIMEOUT" || exit $?
DLAUNCH_EXIT_DIR="$(mktemp -d)" || exit 1
export DLAUNCH_EXIT_DIR
"$@" &
agent=$!
trap 'kill -TERM "$agent" 2>/dev/null' TERM INT
while :; do
    wait "$agent"
    status=$?
    kill -0 "$agent" 2>/dev/null || break
done
for code in 78 75; do
    if [ -e "$DLAUNCH_EXIT_DIR/$code" ]; then
        echo "launch-node.sh: a worker exited with status $code" >&2
        exit "$code"
    fi
done
exit "$status"
"""

RUN_RANK_SH = """\
#!/bin/sh
# Runs one worker process under torchrun: run-rank.sh WORKER-COMMAND...
# torchrun signals the whole process group, so the worker gets SIGTERM directly; this shell
# only outlives it to record exit status 78 or 75 for launch-node.sh.
trap ':' TERM INT
"$@"
status=$?
case "$status" in
    75|78) : > "${DLAUNCH_EXIT_DIR:?set by launch-node.sh}/$status" ;;
esac
exit "$status"
"""

SCRIPTS: dict[str, str] = {LAUNCH_NODE_SCRIPT: LAUNCH_NODE_SH, RUN_RANK_SCRIPT: RUN_RANK_SH}
