"""Exit codes of the worker entrypoint, shared with the Kubernetes pod failure policy."""

# The spec or the data is wrong: restarting cannot help, so the Job fails at once (sysexits EX_CONFIG).
CONFIG_ERROR = 78
# Stopped on SIGTERM after writing a checkpoint: retriable (sysexits EX_TEMPFAIL).
PREEMPTED = 75
# Training finished and its final checkpoint is committed, but post-training work on rank 0
# (quantize, export, artifact upload) failed. The node agent exits with it after its workers
# exited 0, so torchrun never restarts the gang for it; the Job fails at once with the rule
# named in its status. Resubmitting reruns only that work. Outside sysexits (64-78) and 128+N.
POST_TRAINING_FAILED = 80
