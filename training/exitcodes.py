"""Exit codes of the worker entrypoint, shared with the Kubernetes pod failure policy."""

# The spec or the data is wrong: restarting cannot help, so the Job fails at once (sysexits EX_CONFIG).
CONFIG_ERROR = 78
# Stopped on SIGTERM after writing a checkpoint: retriable (sysexits EX_TEMPFAIL).
PREEMPTED = 75
