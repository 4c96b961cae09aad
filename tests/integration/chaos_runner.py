"""One broker lifetime in a crash drill (run as a separate process by the test).

On start it reconciles what an earlier, killed process left behind, prints
``reconciled``, waits for ``go`` on stdin, then activates and revokes short
grants until the armed crash point (``BREAKGLASS_CRASH_AT``) kills it.
"""

from __future__ import annotations

import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drills import reconciled_broker  # a sibling module: this file runs as a script

from breakglass.domain.model import Principal, PrincipalKind


def main() -> None:
    catalog, db, state, seed = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    broker = reconciled_broker(catalog, db, state, timedelta(seconds=2))
    if broker is None:
        return
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
