"""Cancels the plug-in's job on the server when GIMP kills the plug-in (GIMP 3, Python 3).

A cancel from GIMP's status bar ends the plug-in with SIGKILL (TerminateProcess on Windows)
10 ms after asking it to quit, so the plug-in cannot tell the server itself; without help the
server would notice only when the heartbeats have been missing for its heartbeat timeout
(10 s by default). The plug-in therefore starts this small process (GIMP's Python, standard
library + pyzmq) for each job, before the job is sent, and writes one JSON line to its stdin per
event:

    {"address": "tcp://...", "curve": {MagicClient key arguments} | null,
     "cancel_key": "<the job's cancel key>" | null}                        first
    {"job": "<job id>"}                                                    once accepted
    {"done": true}                                                         normal end

When stdin closes without "done" (the plug-in died), the job is cancelled on the server right
away: by its id once the server accepted it (any client may cancel a job given its id), else
by the cancel key the plug-in sends with the job. That covers a kill while the image is still
on its way, or after it arrived and before the plug-in read the answer: the server remembers a
key whose job has not arrived and cancels that job when it does. The guard runs in its own
session, so a kill of the plug-in's process group does not reach it, and exits after at most a
few seconds.
"""

from __future__ import annotations

import json
import sys
import time

CANCEL_TIMEOUT_S = 3.0


def watch(lines, cancel) -> str | None:
    """Read the plug-in's lines until EOF, then cancel(address, curve, job id or None, cancel
    key or None) if the plug-in died during a job. Returns the job id or key cancelled, or
    None."""
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
    key = setup.get("cancel_key") if setup is not None else None
    if done or setup is None or (job is None and not key):
        return None
    cancel(setup["address"], setup.get("curve") or {}, job, None if job else str(key))
    return job or str(key)


def cancel_on_server(address: str, curve: dict, job: str | None, key: str | None) -> None:
    from magic_protocol.client import MagicClient, MagicError

    t0 = time.monotonic()
    what = f"job {job}" if job else "the job being sent (by its cancel key)"
    try:
        with MagicClient(address, timeout_s=CANCEL_TIMEOUT_S, retries=0, **curve) as client:
            found = client.cancel(job) if job else client.cancel(cancel_key=key)
    except MagicError as exc:
        print(f"MAGIC: could not cancel {what} on {address}: {exc}", file=sys.stderr)
        return
    state = "found" if found else ("already gone" if job else "not arrived yet: cancelled "
                                                              "when it does")
    print(f"MAGIC: the plug-in was ended; {what} cancelled on the server ({state}, "
          f"{time.monotonic() - t0:.2f} s)", file=sys.stderr, flush=True)


def main() -> int:
    import zmq  # noqa: F401 - imported up front so that the cancel itself is quick

    watch(sys.stdin, cancel_on_server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
