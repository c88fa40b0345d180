"""Per-job enable flags read from the environment."""

import pytest

from shared.settings import SettingsError, job_enabled, job_enabled_variable


def test_the_variable_name_is_derived_from_the_job_name():
    assert job_enabled_variable("reservations.cleanup") == "CONVEYOR_JOB_RESERVATIONS_CLEANUP_ENABLED"
    assert job_enabled_variable("bills.monthly_v2") == "CONVEYOR_JOB_BILLS_MONTHLY_V2_ENABLED"


@pytest.mark.parametrize("value", ["false", "FALSE", "False", "0", "no", "No", "off", " OFF "])
def test_false_values_disable(value):
    assert job_enabled("a.job", {"CONVEYOR_JOB_A_JOB_ENABLED": value}) is False


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", "on", "On"])
def test_true_values_enable(value):
    assert job_enabled("a.job", {"CONVEYOR_JOB_A_JOB_ENABLED": value}) is True


def test_unset_means_enabled_and_only_the_jobs_own_variable_counts():
    assert job_enabled("a.job", {}) is True
    assert job_enabled("a.job", {"CONVEYOR_JOB_B_JOB_ENABLED": "false"}) is True


@pytest.mark.parametrize("value", ["", "disabled", "flase", "2", "n"])
def test_anything_else_is_refused_naming_the_variable(value):
    with pytest.raises(SettingsError, match=r"CONVEYOR_JOB_A_JOB_ENABLED='.*' is not a boolean: use false"):
        job_enabled("a.job", {"CONVEYOR_JOB_A_JOB_ENABLED": value})


def test_reads_the_process_environment_by_default(monkeypatch):
    monkeypatch.setenv("CONVEYOR_JOB_A_JOB_ENABLED", "off")
    assert job_enabled("a.job") is False
