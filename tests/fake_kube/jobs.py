"""What the real API server and Job controller do with a `batch/v1` Job's failure fields.

The fake API server (`api.py`) defaults and validates every Job it stores with `default_job` and
`job_spec_errors`, and `cluster_sim.JobSim` decides what a pod's end means for its Job with
`match_pod_failure_policy`, `index_failed` and `finished_condition`. Each function names the
upstream one it follows (kubernetes/kubernetes, v1.31 and later, feature gates at their defaults:
JobBackoffLimitPerIndex, JobPodReplacementPolicy and JobManagedBy's delayed terminal condition on):

- pkg/apis/batch/v1/defaults.go `SetDefaults_Job`;
- pkg/apis/batch/validation/validation.go `validateJobSpec`, `validatePodFailurePolicy`,
  `validatePodFailurePolicyRule(OnExitCodes|OnPodConditions)`, `validatePodReplacementPolicy`;
  the 422 text is apimachinery's `field.Error` and `errors.NewInvalid`;
- pkg/controller/job/pod_failure_policy.go `matchPodFailurePolicy`;
- pkg/controller/job/indexed_job_utils.go `isIndexFailed`, `getNewIndexFailureCounts`,
  `orderedIntervals.String`;
- pkg/controller/job/job_controller.go `syncJob` (the order in which the end of a Job is decided)
  and `newFailureCondition` (FailureTarget first, Failed once no pod is terminating);
- pkg/controller/job/backoff_utils.go `getRemainingTimePerIndex` (the replacement's delay).

Not modelled: the generated selector and its template labels, `successPolicy`, `managedBy`,
Jobs of more than 100000 completions, and pod template validation.
"""

from __future__ import annotations

import json
from typing import Any

Obj = dict[str, Any]
MAX_INT32 = 2**31 - 1
DEFAULT_BACKOFF_LIMIT = 6
MAX_PARALLELISM_INDEXED = 100_000
MAX_FAILED_INDEXES = 100_000
MAX_RULES = 20
MAX_EXIT_CODE_VALUES = 255
MAX_CONDITION_PATTERNS = 20
ACTIONS = ("Count", "FailIndex", "FailJob", "Ignore")  # FailIndex: only with backoffLimitPerIndex
EXIT_CODE_OPERATORS = ("In", "NotIn")
CONDITION_STATUSES = ("False", "True", "Unknown")
REPLACEMENT_POLICIES = ("Failed", "TerminatingOrFailed")
# Pod annotations the Job controller writes on each pod of an index (batch/v1 types.go).
FAILURE_COUNT_ANNOTATION = "batch.kubernetes.io/job-index-failure-count"
IGNORED_FAILURE_COUNT_ANNOTATION = "batch.kubernetes.io/job-index-ignored-failure-count"
# job_controller.go: DefaultJobPodFailureBackOff and MaxJobPodFailureBackOff.
POD_FAILURE_BACKOFF_S = 10
MAX_POD_FAILURE_BACKOFF_S = 600
# Reasons and messages of the conditions that end a Job (job_controller.go syncJob).
BACKOFF_LIMIT_EXCEEDED = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
MAX_FAILED_INDEXES_EXCEEDED = ("MaxFailedIndexesExceeded",
                               "Job has exceeded the specified maximal number of failed indexes")
FAILED_INDEXES = ("FailedIndexes", "Job has failed indexes")
POD_FAILURE_POLICY = "PodFailurePolicy"


# ----- the API server ---------------------------------------------------------------------------------
def default_job(job: Obj) -> Obj:
    """SetDefaults_Job: what the API server fills in before validating and storing a Job (in place)."""
    spec = job.setdefault("spec", {})
    if "completions" not in spec and "parallelism" not in spec:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", MAX_INT32 if "backoffLimitPerIndex" in spec else DEFAULT_BACKOFF_LIMIT)
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels")
    if template_labels and not (job.setdefault("metadata", {}).get("labels")):
        job["metadata"]["labels"] = dict(template_labels)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "Failed" if "podFailurePolicy" in spec else "TerminatingOrFailed")
    spec.setdefault("manualSelector", False)
    for rule in (spec.get("podFailurePolicy") or {}).get("rules") or []:
        for pattern in rule.get("onPodConditions") or []:
            pattern.setdefault("status", "True")  # SetDefaults_PodFailurePolicyOnPodConditionsPattern
    return job


def shown(value: Any) -> str:
    """A bad value as field.Error.ErrorBody prints it: numbers and booleans plain, strings quoted."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value)


def int32s(values: list[int] | None) -> str:
    """An exit-code list as Go's %#v prints an []int32 (field.Error's fallback for slices)."""
    return "[]int32(nil)" if values is None else "[]int32{" + ", ".join(str(v) for v in values) + "}"


def invalid(path: str, value: Any, detail: str) -> str:
    return f"{path}: Invalid value: {shown(value)}: {detail}"


def required(path: str, detail: str) -> str:
    return f"{path}: Required value: {detail}"


def unsupported(path: str, value: Any, supported: tuple[str, ...]) -> str:
    return f"{path}: Unsupported value: {shown(value)}: supported values: " + ", ".join(f'"{s}"' for s in supported)


def nonnegative(spec: Obj, path: str) -> list[str]:
    """ValidateNonnegativeField for every count and duration of the spec that is set."""
    names = ("parallelism", "completions", "activeDeadlineSeconds", "backoffLimit", "ttlSecondsAfterFinished",
             "backoffLimitPerIndex", "maxFailedIndexes")
    return [invalid(f"{path}.{name}", spec[name], "must be greater than or equal to 0")
            for name in names if isinstance(spec.get(name), int) and spec[name] < 0]


def indexed_errors(spec: Obj, path: str) -> list[str]:
    """The completionMode rules of validateJobSpec: what Indexed requires, and what only it allows."""
    mode, errors = spec.get("completionMode"), []
    completions, limit = spec.get("completions"), spec.get("maxFailedIndexes")
    if mode not in (None, "NonIndexed", "Indexed"):
        errors.append(unsupported(f"{path}.completionMode", mode, ("NonIndexed", "Indexed")))
    if mode == "Indexed":
        if completions is None:
            errors.append(required(f"{path}.completions", "when completion mode is Indexed"))
        if (spec.get("parallelism") or 0) > MAX_PARALLELISM_INDEXED:
            errors.append(invalid(f"{path}.parallelism", spec["parallelism"],
                                  f"must be less than or equal to {MAX_PARALLELISM_INDEXED} when completion mode "
                                  "is Indexed"))
        if completions is not None and limit is not None and limit > completions:
            errors.append(invalid(f"{path}.maxFailedIndexes", limit, "must be less than or equal to completions"))
        if limit is not None and limit > MAX_FAILED_INDEXES:
            errors.append(invalid(f"{path}.maxFailedIndexes", limit,
                                  f"must be less than or equal to {MAX_FAILED_INDEXES}"))
    elif mode in (None, "NonIndexed"):
        errors += [invalid(f"{path}.{name}", spec[name], "requires indexed completion mode")
                   for name in ("backoffLimitPerIndex", "maxFailedIndexes") if name in spec]
    return errors


def exit_code_errors(requirement: Obj, path: str, containers: set[str]) -> list[str]:
    """validatePodFailurePolicyRuleOnExitCodes."""
    errors, operator, sent = [], requirement.get("operator"), requirement.get("values")
    values = list(sent or [])
    if not operator:
        errors.append(required(f"{path}.operator", 'valid values: ["In" "NotIn"]'))
    elif operator not in EXIT_CODE_OPERATORS:
        errors.append(unsupported(f"{path}.operator", operator, EXIT_CODE_OPERATORS))
    name = requirement.get("containerName")
    if name is not None and name not in containers:
        errors.append(invalid(f"{path}.containerName", name,
                              "must be one of the container or initContainer names in the pod template"))
    if not values:
        errors.append(f"{path}.values: Invalid value: {int32s(sent)}: at least one value is required")
    elif len(values) > MAX_EXIT_CODE_VALUES:
        errors.append(f"{path}.values: Too many: {len(values)}: must have at most {MAX_EXIT_CODE_VALUES} items")
    for j, value in enumerate(values):
        if operator == "In" and value == 0:
            errors.append(invalid(f"{path}.values[{j}]", value, "must not be 0 for the In operator"))
        if value in values[:j]:
            errors.append(f"{path}.values[{j}]: Duplicate value: {value}")
    if values != sorted(values):
        errors.append(f"{path}.values: Invalid value: {int32s(values)}: must be ordered")
    return errors


def condition_errors(patterns: list[Obj], path: str) -> list[str]:
    """validatePodFailurePolicyRuleOnPodConditions (statuses as stored, after defaulting)."""
    errors = [] if len(patterns) <= MAX_CONDITION_PATTERNS else [
        f"{path}: Too many: {len(patterns)}: must have at most {MAX_CONDITION_PATTERNS} items"]
    for j, pattern in enumerate(patterns):
        if not pattern.get("type"):
            errors.append(required(f"{path}[{j}].type", "name part must be non-empty"))
        if pattern.get("status") not in CONDITION_STATUSES:
            errors.append(unsupported(f"{path}[{j}].status", pattern.get("status"), CONDITION_STATUSES))
    return errors


def rule_errors(spec: Obj, rule: Obj, path: str, containers: set[str]) -> list[str]:
    """validatePodFailurePolicyRule: a known action (FailIndex only with per-index limits) and one matcher."""
    action, errors = rule.get("action"), []
    if not action:
        errors.append(required(f"{path}.action", "valid values: [" + " ".join(f'"{a}"' for a in ACTIONS) + "]"))
    elif action == "FailIndex":
        if "backoffLimitPerIndex" not in spec:
            errors.append(invalid(f"{path}.action", action, "requires the backoffLimitPerIndex to be set"))
    elif action not in ACTIONS:
        errors.append(unsupported(f"{path}.action", action, ACTIONS))
    on_codes, on_conditions = rule.get("onExitCodes"), rule.get("onPodConditions") or []
    if on_codes is not None:
        errors += exit_code_errors(on_codes, f"{path}.onExitCodes", containers)
    if on_conditions:
        errors += condition_errors(on_conditions, f"{path}.onPodConditions")
    if on_codes is not None and on_conditions:
        errors.append(f"{path}: Invalid value: specifying both OnExitCodes and OnPodConditions is not supported")
    if on_codes is None and not on_conditions:
        errors.append(f"{path}: Invalid value: specifying one of OnExitCodes and OnPodConditions is required")
    return errors


def policy_errors(spec: Obj, path: str) -> list[str]:
    """validatePodFailurePolicy and validatePodReplacementPolicy, and the restartPolicy it needs."""
    errors, policy = [], spec.get("podFailurePolicy")
    template = (spec.get("template") or {}).get("spec") or {}
    replacement = spec.get("podReplacementPolicy")
    if policy is not None:
        rules = policy.get("rules") or []
        if len(rules) > MAX_RULES:
            errors.append(f"{path}.podFailurePolicy.rules: Too many: {len(rules)}: must have at most {MAX_RULES} items")
        containers = {c.get("name") for c in [*(template.get("containers") or []),
                                               *(template.get("initContainers") or [])]}
        for i, rule in enumerate(rules):
            errors += rule_errors(spec, rule, f"{path}.podFailurePolicy.rules[{i}]", containers)
        if replacement is not None and replacement != "Failed":
            errors.append(unsupported(f"{path}.podReplacementPolicy", replacement, ("Failed",)))
    elif replacement is not None and replacement not in REPLACEMENT_POLICIES:
        errors.append(unsupported(f"{path}.podReplacementPolicy", replacement, REPLACEMENT_POLICIES))
    restart = template.get("restartPolicy")
    if restart in (None, "", "Always"):
        errors.append(required(f"{path}.template.spec.restartPolicy", 'valid values: "OnFailure", "Never"'))
    elif restart not in ("OnFailure", "Never"):
        errors.append(unsupported(f"{path}.template.spec.restartPolicy", restart, ("OnFailure", "Never")))
    elif policy is not None and restart != "Never":
        errors.append(invalid(f"{path}.template.spec.restartPolicy", restart,
                              'only "Never" is supported when podFailurePolicy is specified'))
    return errors


def job_spec_errors(spec: Obj, path: str = "spec") -> list[str]:
    """validateJobSpec, in its order: counts, per-index limits, completion mode, the failure policy."""
    errors = nonnegative(spec, path)
    if "maxFailedIndexes" in spec and "backoffLimitPerIndex" not in spec:
        errors.append(required(f"{path}.backoffLimitPerIndex", "when maxFailedIndexes is specified"))
    return errors + indexed_errors(spec, path) + policy_errors(spec, path)


def invalid_message(kind: str, name: str, errors: list[str]) -> str:
    """errors.NewInvalid: `Job.batch "x" is invalid: ERR`, several as `[ERR, ERR]` (an aggregate)."""
    body = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
    return f'{kind} "{name}" is invalid: {body}'


# ----- the Job controller ------------------------------------------------------------------------------
def exit_code_match(pod: Obj, requirement: Obj) -> tuple[str, int] | None:
    """matchOnExitCodes: the container whose exit code the requirement's operator accepts."""
    status = pod.get("status") or {}
    for entry in [*(status.get("containerStatuses") or []), *(status.get("initContainerStatuses") or [])]:
        terminated = (entry.get("state") or {}).get("terminated") or {}
        code = int(terminated.get("exitCode") or 0)
        name = requirement.get("containerName")
        if not terminated or code == 0 or (name is not None and entry.get("name") != name):
            continue
        listed = code in (requirement.get("values") or [])
        if (requirement.get("operator") == "In" and listed) or (requirement.get("operator") == "NotIn" and not listed):
            return entry["name"], code
    return None


def condition_match(pod: Obj, patterns: list[Obj]) -> str | None:
    """matchOnPodConditions: the type of the pod's first condition that a pattern names."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if any(condition.get("type") == p.get("type") and condition.get("status") == p.get("status", "True")
               for p in patterns):
            return str(condition["type"])
    return None


def match_pod_failure_policy(policy: Obj | None, pod: Obj) -> tuple[str | None, bool, str | None]:
    """matchPodFailurePolicy: (the FailJob message, whether the failure counts, the matched action)."""
    meta = pod["metadata"]
    for index, rule in enumerate((policy or {}).get("rules") or []):
        action = rule.get("action")
        if rule.get("onExitCodes") is not None:
            found = exit_code_match(pod, rule["onExitCodes"])
            if found is None:
                continue
            message = (f"Container {found[0]} for pod {meta['namespace']}/{meta['name']} failed with exit code "
                       f"{found[1]} matching {action} rule at index {index}")
        else:
            condition = condition_match(pod, rule.get("onPodConditions") or [])
            if condition is None:
                continue
            message = (f"Pod {meta['namespace']}/{meta['name']} has condition {condition} matching {action} rule at "
                       f"index {index}")
        return (message if action == "FailJob" else None), action != "Ignore", action
    return None, True, None


def failure_counts(pod: Obj | None) -> tuple[int, int]:
    """(failures counted against backoffLimitPerIndex, ignored failures) of a pod's index so far."""
    annotations = ((pod or {}).get("metadata") or {}).get("annotations") or {}
    return int(annotations.get(FAILURE_COUNT_ANNOTATION, 0)), int(annotations.get(IGNORED_FAILURE_COUNT_ANNOTATION, 0))


def index_failed(spec: Obj, pod: Obj) -> bool:
    """isIndexFailed: the failed pod's index is lost for good (FailIndex, or a counted failure with the
    index's failures already at backoffLimitPerIndex)."""
    _, counted, action = match_pod_failure_policy(spec.get("podFailurePolicy"), pod)
    if action == "FailIndex":
        return True
    return counted and failure_counts(pod)[0] >= int(spec["backoffLimitPerIndex"])


def replacement_counts(spec: Obj, failed_pod: Obj) -> tuple[int, int]:
    """getNewIndexFailureCounts: the annotations of the pod that replaces `failed_pod`."""
    count, ignored = failure_counts(failed_pod)
    _, counted, _ = match_pod_failure_policy(spec.get("podFailurePolicy"), failed_pod)
    return (count + 1, ignored) if counted else (count, ignored + 1)


def replacement_backoff_s(failed_pod: Obj) -> int:
    """getRemainingTimePerIndex at the moment of the failure: 10 s doubled per earlier failure of the
    index, ignored ones included, at most 10 minutes."""
    failures = sum(failure_counts(failed_pod)) + 1
    delay = POD_FAILURE_BACKOFF_S
    for _ in range(1, failures):
        delay = min(delay * 2, MAX_POD_FAILURE_BACKOFF_S)
    return delay


def indexes_text(indexes: set[int]) -> str:
    """orderedIntervals.String: `0,2-4,7,8` (two neighbours are listed, longer runs are ranges)."""
    runs: list[list[int]] = []
    for index in sorted(indexes):
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    parts = [str(a) if a == b else f"{a}{',' if b == a + 1 else '-'}{b}" for a, b in runs]
    return ",".join(parts)


def parse_indexes(text: str | None) -> set[int]:
    """The indexes of a `status.completedIndexes` or `status.failedIndexes` string."""
    found: set[int] = set()
    for part in filter(None, (text or "").split(",")):
        first, _, last = part.partition("-")
        found.update(range(int(first), int(last or first) + 1))
    return found


def finished_condition(spec: Obj, fail_job_message: str | None, failed: int, failed_indexes: set[int],
                       succeeded_indexes: set[int]) -> tuple[str, str] | None:
    """syncJob's decision, in its order: a FailJob rule, the job-wide backoffLimit, then the per-index
    limits (more failed indexes than maxFailedIndexes, or every index done with some failed)."""
    if fail_job_message is not None:
        return POD_FAILURE_POLICY, fail_job_message
    if failed > int(spec.get("backoffLimit", DEFAULT_BACKOFF_LIMIT)):
        return BACKOFF_LIMIT_EXCEEDED
    if spec.get("completionMode") != "Indexed" or "backoffLimitPerIndex" not in spec:
        return None
    limit = spec.get("maxFailedIndexes")
    if limit is not None and len(failed_indexes) > int(limit):
        return MAX_FAILED_INDEXES_EXCEEDED
    if failed_indexes and len(failed_indexes | succeeded_indexes) >= int(spec["completions"]):
        return FAILED_INDEXES
    return None
