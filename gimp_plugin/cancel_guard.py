"""Cancels the plug-in's job on the server when GIMP kills the plug-in (GIMP 3, Python 3).

A cancel from GIMP's status bar ends the plug-in with SIGKILL (TerminateProcess on Windows)
10 ms after asking it to quit, so the plug-in cannot tell the server itself; without help the
server would notice only when the heartbeats have been missing for its heartbeat timeout
(10 s by default). The plug-in therefore starts this small process (GIMP's Python, standard
library + pyzmq) for each job and writes one JSON line to its stdin per event:

    {"address": "tcp://...", "curve": {MagicClient key arguments} | null}   first
    {"job": "<job id>"}                                                    once accepted
    {"done": true}                                                         normal end

When stdin closes without "done" (the plug-in died), the job is cancelled on the server right
away (any client may cancel a job given its id). The guard runs in its own session, so a kill
of the plug-in's process group does not reach it, and exits after at most a few seconds.
"""

from __future__ import annotations

import json
import sys
import time

CANCEL_TIMEOUT_S = 3.0


def watch(lines, cancel) -> str | None:
    """Read the plug-in's lines until EOF; returns the job id to cancel, or None."""
    setup, job, done = None, None, False
    for line in lines:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if not isinstance(msg, dict):
            continue
        if "address" in msg:
            setup = msg
        if msg.get("job"):
            job = str(msg["job"])
        if msg.get("done"):
            done = True
    if done or job is None or setup is None:
        return None
    cancel(setup["address"], setup.get("curve") or {}, job)
    return job


def cancel_on_server(address: str, curve: dict, job: str) -> None:
    from magic_protocol.client import MagicClient, MagicError

    t0 = time.monotonic()
    try:
        with MagicClient(address, timeout_s=CANCEL_TIMEOUT_S, retries=0, **curve) as client:
            found = client.cancel(job)
    except MagicError as exc:
        print(f"MAGIC: could not cancel job {job} on {address}: {exc}", file=sys.stderr)
        return
    print(f"MAGIC: the plug-in was ended; job {job} cancelled on the server "
          f"({'found' if found else 'already gone'}, {time.monotonic() - t0:.2f} s)",
          file=sys.stderr, flush=True)


def main() -> int:
    import zmq  # noqa: F401 - imported up front so that the cancel itself is quick

    watch(sys.stdin, cancel_on_server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
