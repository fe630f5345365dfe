"""Reading a Job's state (finished, outcome, completion time, our version annotation)."""

from __future__ import annotations

from jouleledger.core.footprints import KEY_VERSION
from jouleledger.kube.jobs import counted_pods, job_state


def test_job_state_reads_conditions_and_the_version_annotation() -> None:
    complete = {
        "metadata": {"annotations": {KEY_VERSION: "1"}},
        "status": {
            "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": "2024-01-01T00:00:10Z"}]
        },
    }
    state = job_state(complete)
    assert (state.finished, state.outcome, state.annotated) == (True, "Complete", True)
    assert state.completion_unix_s == 1704067210.0
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": "bad"}]}}
    assert job_state(failed).finished
    assert job_state(failed).completion_unix_s is None
    assert not job_state({"status": {"conditions": [{"type": "Complete", "status": "False"}]}}).finished


def test_counted_pods_is_known_only_when_the_status_counts_every_pod_the_job_ran() -> None:
    # What the Job controller writes once a one-pod Job completed (no active, terminating or uncounted pods).
    done = {"succeeded": 1, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {}}
    assert counted_pods(done) == 1
    assert counted_pods({"succeeded": 2, "failed": 3}) == 5
    assert counted_pods({"failed": 1, "active": 0}) == 1
    assert counted_pods({"succeeded": 1, "active": 1}) is None  # a pod still runs
    assert counted_pods({"succeeded": 1, "terminating": 2}) is None  # pods still stopping
    assert counted_pods({"succeeded": 1, "uncountedTerminatedPods": {"failed": ["uid-2"]}}) is None
    assert counted_pods({"succeeded": 1, "uncountedTerminatedPods": []}) is None  # not the API's shape
    assert counted_pods({}) is None  # no counts written (not the Job controller's status): nothing is known
    for bad in (-1, 1.5, "1", True):
        assert counted_pods({"succeeded": bad}) is None
    assert counted_pods({"succeeded": None, "failed": 2}) == 2  # null reads as none, as the API omits zeros


def test_a_finished_jobs_state_carries_its_counted_pods_and_a_running_ones_does_not() -> None:
    condition = {"type": "Failed", "status": "True", "lastTransitionTime": "2024-01-01T00:00:10Z"}
    assert job_state({"status": {"conditions": [condition], "failed": 4}}).counted_pods == 4
    assert job_state({"status": {"conditions": [condition]}}).counted_pods is None
    assert job_state({"status": {"succeeded": 1}}).counted_pods is None  # not finished
