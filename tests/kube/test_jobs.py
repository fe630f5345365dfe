"""Reading a Job's state (finished, outcome, completion time, our version annotation)."""

from __future__ import annotations

from jouleledger.core.footprints import KEY_VERSION
from jouleledger.kube.jobs import job_state


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
