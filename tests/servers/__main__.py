"""Run the test servers outside pytest (benchmarks, manual checks, CI scripts).

    PYTHONPATH=tests python -m servers [s3] [gcs] [azure] [--dir DIR] [--env-file FILE]

Starts the named servers (all three by default) exactly as the test fixtures do, prints the
environment a `hangar` process needs to reach each one as ``export`` lines (also written to
--env-file), and stops them by PID on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m servers")
    parser.add_argument("which", nargs="*", help="s3, gcs, azure (default: all three)")
    parser.add_argument("--dir", type=Path, help="data and log directory (default: a new tmp dir)")
    parser.add_argument("--env-file", type=Path, help="also write the export lines here")
    args = parser.parse_args(argv)
    which = args.which or ["s3", "gcs", "azure"]
    unknown = set(which) - {"s3", "gcs", "azure"}
    if unknown:
        parser.error(f"unknown server(s): {', '.join(sorted(unknown))}")
    base = args.dir or Path(tempfile.mkdtemp(prefix="hangar-servers-"))
    base.mkdir(parents=True, exist_ok=True)

    from servers.cloud_backends import AzureBackend, GcsBackend, S3Backend

    started: list[Any] = []
    env: dict[str, str] = {}
    try:
        for name in which:
            if name == "s3":
                from servers.seaweedfs import start_seaweedfs

                server: Any = start_seaweedfs(base)
                started.append(server)
                env.update(S3Backend(server).env)
            elif name == "gcs":
                from servers.fakegcs import start_fake_gcs

                server = start_fake_gcs(base)
                started.append(server)
                env.update(GcsBackend(server).env)
            else:
                from servers.azurite import start_azurite

                server = start_azurite(base)
                started.append(server)
                env.update(AzureBackend(server).env)
        env.pop("HANGAR_DEFAULT_STORE", None)
        lines = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
        if args.env_file:
            args.env_file.write_text(lines)
        sys.stdout.write(lines)
        sys.stdout.write(f"# servers running (logs under {base}); Ctrl-C to stop\n")
        sys.stdout.flush()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        stop.wait()
    finally:
        for server in reversed(started):
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
