"""One broker lifetime in a crash drill (run as a separate process by the test).

On start it reconciles what an earlier, killed process left behind, prints
``reconciled``, waits for ``go`` on stdin, then activates and revokes short
grants until the armed crash point (``BREAKGLASS_CRASH_AT``) kills it.
"""

from __future__ import annotations

import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from breakglass.bootstrap import bootstrap
from breakglass.domain.model import Principal, PrincipalKind
from breakglass.service import crashpoints
from breakglass.settings import Settings


def main() -> None:
    catalog, db, state, seed = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    crash_at = os.environ.pop("BREAKGLASS_CRASH_AT", None)  # armed only after reconciling
    container = bootstrap(Settings.from_env(catalog, db_url=db, dev=True, state_dir=state),
                          migrate=False)
    broker = container.broker
    broker.recover(timedelta(0))  # this process is the only broker: nothing is in flight
    while broker.expire_due():
        pass
    deadline = broker.next_deadline()
    while deadline is not None and deadline <= datetime.now(UTC) + timedelta(seconds=2):
        time.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.05)
        broker.expire_due()
        deadline = broker.next_deadline()
    print("reconciled", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    crashpoints.arm(crash_at)
    rng = random.Random(seed)
    uma = Principal("uma", PrincipalKind.HUMAN, frozenset({"team:ml-serving", "responders"}),
                    True, datetime.now(UTC))
    for _ in range(3):
        view = broker.request_access(uma, ["store-read", "cache-read"], incident="DRILL-1",
                                     reason="recovery", ttl=timedelta(seconds=1))
        if rng.random() < 0.85:
            broker.revoke(uma, view.request.id, "drill")
        else:
            time.sleep(1.05)
            broker.expire_due()
    print("finished", flush=True)


if __name__ == "__main__":
    main()
