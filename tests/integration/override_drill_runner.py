"""One broker lifetime in the workload-override crash drill (run as a process by the test).

On start it reconciles what a killed predecessor left (recovery, then every due
expiry), prints ``reconciled``, waits for ``go`` on stdin, then overrides the
service account and rolls it back until the armed crash point
(``BREAKGLASS_CRASH_AT``) kills it with SIGKILL.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from breakglass.bootstrap import bootstrap
from breakglass.domain.model import Principal, PrincipalKind
from breakglass.service import crashpoints
from breakglass.settings import Settings


def main() -> None:
    catalog, db, state = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    crash_at = os.environ.pop("BREAKGLASS_CRASH_AT", None)  # armed only after reconciling
    container = bootstrap(Settings.from_env(catalog, db_url=db, dev=True, state_dir=state),
                          migrate=False)
    broker = container.broker
    broker.recover(timedelta(0))
    while broker.expire_due():
        pass
    deadline = broker.next_deadline()
    while deadline is not None and deadline <= datetime.now(UTC) + timedelta(seconds=3):
        time.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.05)
        broker.expire_due()
        deadline = broker.next_deadline()
    print("reconciled", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    crashpoints.arm(crash_at)
    now = datetime.now(UTC)
    uma = Principal("uma", PrincipalKind.HUMAN, frozenset({"team:ml-serving", "responders"}),
                    True, now)
    vera = Principal("vera", PrincipalKind.HUMAN, frozenset({"team:sre", "reviewers"}), True, now)
    for n in range(2):
        rid = broker.request_access(uma, ["embeddings-rewrite"], incident="SEV-5001",
                                    reason="recovery", workload="embeddings-pipeline",
                                    ttl=timedelta(seconds=2)).request.id
        broker.approve(vera, rid)
        if n == 0:
            broker.revoke(uma, rid, "drill")
        else:
            time.sleep(2.05)
            broker.expire_due()
    print("finished", flush=True)


if __name__ == "__main__":
    main()
