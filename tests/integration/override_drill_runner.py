"""One broker lifetime in the workload-override crash drill (run as a process by the test).

On start it reconciles what a killed predecessor left (recovery, then every due
expiry), prints ``reconciled``, waits for ``go`` on stdin, then overrides the
service account and rolls it back until the armed crash point
(``BREAKGLASS_CRASH_AT``) kills it with SIGKILL.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drills import reconciled_broker  # a sibling module: this file runs as a script

from breakglass.domain.model import Principal, PrincipalKind


def main() -> None:
    catalog, db, state = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    broker = reconciled_broker(catalog, db, state, timedelta(seconds=3))
    if broker is None:
        return
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
