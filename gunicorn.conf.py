"""Gunicorn settings for ``webhooks:create_app()``; the Procfile's web line names this file.

Gunicorn builds the app in each worker, after forking. A bad setting (``MAILBOT_WEBHOOK_SECRET``
unset, say) would there be a traceback from every worker and then "Worker failed to boot",
with the one line that matters buried in the middle. So before the master binds the port or
forks a worker, ``on_starting`` checks the configuration as ``create_app()`` would, and on a
bad setting logs one line naming the variable and exits with status 2 (as ``mailbot`` does).

The check runs in a child process: importing the app's modules into the master would make
workers inherit them, so a worker restarted by ``kill -HUP`` (or ``--reload``) would keep
running the old code, as with ``preload_app``. A failure of the check itself (an import error
after a broken deploy) does not stop the server here: the workers then report it in full.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

CHECK = "import sys, webhooks; sys.exit(webhooks.check_startup())"


def on_starting(server: Any) -> None:
    try:
        check = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                               timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        server.log.warning("configuration check did not run (%s); starting anyway", exc)
        return
    if check.returncode == 2 and check.stdout.strip():
        server.log.error("%s", check.stdout.strip().splitlines()[-1])
        if server.pidfile is not None:
            server.pidfile.unlink()
        sys.exit(2)
    if check.returncode != 0:
        server.log.warning("configuration check failed (exit status %s); starting anyway",
                           check.returncode)
