"""``swarmd-watchdog``: the sidecar that reclaims what a killed app process held.

Exit codes: 0 stopped by a signal, 2 invalid settings.
"""

from __future__ import annotations

import asyncio
import sys

from pydantic import ValidationError


def main(argv: list[str] | None = None) -> int:
    from swarmd.errors import field_path
    from swarmd.logs import setup_logging
    from swarmd.watchdog.service import Watchdog
    from swarmd.watchdog.settings import WatchdogSettings

    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("Settings: SWARMD_WATCHDOG_* environment variables (see watchdog/settings.py).")
        return 0
    try:
        settings = WatchdogSettings()
    except ValidationError as exc:
        for e in exc.errors():
            name = "SWARMD_WATCHDOG_" + field_path(e["loc"], sep="_").upper()
            print(f"swarmd-watchdog: invalid setting {name}: {e['msg']}", file=sys.stderr)
        return 2
    setup_logging(settings.log_format, settings.log_level)
    asyncio.run(Watchdog(settings).serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
