"""What a staging failure is worth, and the bounded retries of one operation: shared by the hub's side and S3's.

Standard library only: the staging Job's pod carries this package from its ConfigMap and nothing else of the project.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TypeVar

# Retries of one operation are bounded in count and in time; a copy that gets a part further starts afresh.
MAX_ATTEMPTS = 6
RETRY_DEADLINE_SECONDS = 300.0
BACKOFF_BASE_SECONDS = 1.0  # doubled at each failure (1, 2, 4, 8, 16 s), never past the maximum
BACKOFF_MAX_SECONDS = 30.0
T = TypeVar("T")


class Permanent(Exception):
    """Running again cannot help: bad input, no access, a revision vLLM cannot load (exit 2)."""


class Transient(Exception):
    """Worth another try: 429, 5xx, resets, timeouts (exit 1 once the retries are spent)."""

    def __init__(self, message: str, retry_after: float = 0.0):
        super().__init__(message)
        self.retry_after = retry_after


class Backoff:
    """Bounded retries of one operation: at most `attempts` failures (MAX_ATTEMPTS) in `deadline` seconds
    (RETRY_DEADLINE_SECONDS). `sleep` and `clock` are time's own but where a test steps them."""

    def __init__(
        self,
        what: str,
        attempts: Optional[int] = None,
        deadline: Optional[float] = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        # Read when the operation starts, not when this module is imported, so that a test's smaller bound holds.
        self.attempts = attempts if attempts is not None else MAX_ATTEMPTS
        self.deadline = deadline if deadline is not None else RETRY_DEADLINE_SECONDS
        self.what, self.sleep, self.clock = what, sleep, clock
        self.failures, self.since = 0, clock()

    def progressed(self) -> None:
        self.failures, self.since = 0, self.clock()

    def wait(self, error: Transient) -> None:
        self.failures += 1
        spent = self.clock() - self.since
        if self.failures >= self.attempts or spent >= self.deadline:
            raise Transient(f"{error} (gave up after {self.failures} attempt(s) in {spent:.0f} s)") from error
        delay = max(BACKOFF_BASE_SECONDS * 2 ** (self.failures - 1), error.retry_after)
        delay = min(delay, BACKOFF_MAX_SECONDS, self.deadline - spent)
        print(f"retrying {self.what} in {delay:.1f} s: {error}", file=sys.stderr, flush=True)
        self.sleep(delay)


def retrying(what: str, attempt: Callable[[], T]) -> T:
    backoff = Backoff(what)
    while True:
        try:
            return attempt()
        except Transient as error:
            backoff.wait(error)
