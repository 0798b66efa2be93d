"""How a trial fails: each kind carries the failure kind and exit code its result reports."""

from __future__ import annotations

from targets.harness.result import EXIT_INCORRECT, EXIT_INTERNAL, EXIT_TIMEOUT


class TrialFailure(Exception):
    kind = "internal"
    exit_code = EXIT_INTERNAL


class KernelCrash(TrialFailure):
    kind = "crash"


class KernelIncorrect(TrialFailure):
    kind = "incorrect"
    exit_code = EXIT_INCORRECT


class TrialTimeout(TrialFailure):
    kind = "timeout"
    exit_code = EXIT_TIMEOUT
