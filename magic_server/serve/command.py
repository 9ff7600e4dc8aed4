"""magic-server's command line: the arguments, the weights and devices checked before anything
starts, the port bound before the engines load (a busy port fails at once), the engines built
(magic_server/engines.py), warmed up and served (serve/server.py) until a signal."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from magic_protocol.protocol import DEFAULT_ADDRESS, DEFAULT_LIMITS, Limits
from magic_server.devices import DeviceError, parse_device_list, resolve_device_list
from magic_server.engine.api import EditEngine
from magic_server.serve.curve import (
    CurveConfig,
    CurveSetupError,
    default_keys_dir,
    is_local_endpoint,
    keygen,
)
from magic_server.serve.estimates import Estimates, probe_rate, probe_seconds
from magic_server.serve.estimates import default_path as default_estimates_path
from magic_server.serve.server import (
    DEFAULT_HEARTBEAT_TIMEOUT_S,
    BindError,
    Server,
    loading_description,
)
from magic_server.weights.choice import STAND_IN, STAND_IN_NOTICE, NoWeights, resolve_weights

log = logging.getLogger("magic_server")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="magic-server", description="MAGIC synthesis job server "
                                 "(protocol: docs/protocol.md)")
    ap.add_argument("--bind", default=DEFAULT_ADDRESS, metavar="tcp://HOST:PORT",
                    help=f"address to listen on (default {DEFAULT_ADDRESS}; ipc:// accepted; "
                         "a non-loopback address needs CurveZMQ keys)")
    ap.add_argument("--device", default="auto", metavar="DEV[,DEV...]|all",
                    help="cuda, cuda:N, mps, cpu or auto (default); a comma-separated list runs "
                         "one engine worker per entry (cuda:0,cuda:1; cpu,cpu); all = every "
                         "CUDA GPU, or the CPU when there is none")
    ap.add_argument("--weights", default=None, metavar="FILE|efficientnet-lite0|untrained",
                    help="classifier weights (default: the installed robust ResNet-50, else the "
                         "efficientnet-lite0 stand-in: ImageNet, not robust)")
    ap.add_argument("--keygen", action="store_true",
                    help="create a server and a client CurveZMQ key pair and exit")
    ap.add_argument("--keys", type=Path, default=None, metavar="FOLDER",
                    help=f"CurveZMQ keys folder (default {default_keys_dir()})")
    ap.add_argument("--curve", action="store_true",
                    help="require CurveZMQ even on a loopback address")
    ap.add_argument("--heartbeat-timeout", type=float, default=DEFAULT_HEARTBEAT_TIMEOUT_S,
                    metavar="SECONDS", help="cancel a job whose client is silent this long")
    ap.add_argument("--max-pixels", type=int, default=DEFAULT_LIMITS.max_pixels)
    ap.add_argument("--max-message-mb", type=int,
                    default=DEFAULT_LIMITS.max_message_bytes // 2**20)
    ap.add_argument("--resolution", type=int, default=224,
                    help="default working resolution when a job does not set one")
    ap.add_argument("--no-warm-up", action="store_true", help=argparse.SUPPRESS)
    return ap


def load_engines(devices: Sequence[Any], weights: str | None) -> list[EditEngine]:
    """One real engine per device, each with its own copy of the classifier on its device
    (the checkpoint is read once)."""
    from magic_server.engines import build_engines
    from magic_server.weights.store import download_progress

    # Never a download here (see weights/choice.py): main() refused missing weights already, or
    # chose the stand-in classifier.
    return build_engines(weights, devices, progress=download_progress())


def worker_devices(text: str, resolve: bool = True) -> list[str]:
    """--device text -> one device string per worker; DeviceError (one line) when wrong.

    resolve=False keeps lists of "cpu" and "auto" as they are, without importing torch (the
    tests' stand-in engines); anything else is checked against this machine."""
    names = parse_device_list(text)
    if not resolve and all(n in ("cpu", "auto") for n in names):
        return names
    return [str(d) for d in resolve_device_list(names)]


def main(argv: Sequence[str] | None = None,
         engine_factory: Callable[[argparse.Namespace], Any] | None = None) -> int:
    """Entry point. `engine_factory(args)` replaces the real engine (tests use a stand-in)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s magic-server %(message)s", datefmt="%H:%M:%S")
    keys_dir = args.keys or default_keys_dir()
    weights = args.weights
    if not args.keygen:
        try:
            # Before the port and the engines: no usable weights is refused at once (a
            # stand-in engine from engine_factory has its own).
            if engine_factory is None:
                weights = resolve_weights(args.weights)
                if weights == STAND_IN and args.weights is None:
                    log.warning("%s", STAND_IN_NOTICE)
        except NoWeights as exc:
            print(f"magic-server: {exc}", file=sys.stderr, flush=True)
            return 1
        try:
            devices = worker_devices(args.device, resolve=engine_factory is None)
        except DeviceError as exc:
            print(f"magic-server: {exc}", file=sys.stderr)
            return 1
        if len(set(devices)) < len(devices) and any(d != "cpu" for d in devices):
            log.warning("several workers share one GPU (%s): they compete for its memory",
                        ", ".join(devices))
    try:
        if args.keygen:
            for path in keygen(keys_dir):
                print(f"wrote {path}")
            print(f"copy server.key, client.key and client.key_secret from {keys_dir} to the "
                  "client machine (magic-edit --server uses them)")
            return 0
        # Any non-loopback address gets CURVE; CurveConfig says how to make keys if missing.
        curve = CurveConfig(keys_dir) if args.curve or not is_local_endpoint(args.bind) else None
        limits = Limits(max_pixels=args.max_pixels,
                        max_message_bytes=args.max_message_mb * 2**20)
        # Bind before the slow part (loading weights) so that a busy port fails at once.
        engine_box: dict[int, Any] = {}
        server = Server([_LazyEngine(engine_box, i, d) for i, d in enumerate(devices)], args.bind,
                        limits=limits, heartbeat_timeout_s=args.heartbeat_timeout, curve=curve,
                        default_resolution=args.resolution)
    except (CurveSetupError, BindError) as exc:
        print(f"magic-server: {exc}", file=sys.stderr)
        return 2
    try:
        if engine_factory:
            engines = [engine_factory(argparse.Namespace(**{**vars(args), "device": d}))
                       for d in devices]
        else:
            engines = load_engines(devices, weights)
        engine_box.update(enumerate(engines))
        if str(getattr(engines[0], "weights_label", "")).startswith("untrained"):
            log.warning("using an UNTRAINED classifier (random weights): results will not look "
                        "like MAGIC's; install the weights with `magic-installer weights`")
        for i, (engine, device) in enumerate(zip(engines, devices)):
            if not args.no_warm_up:
                log.info("warming up worker %d (%s)", i, device)
                engine.warm_up()
        server.capabilities = server._capabilities()
        server.estimates = server_estimates(server.capabilities, engines[0], args,
                                            keep=engine_factory is None)
    except Exception as exc:  # noqa: BLE001 - one clear line for the user
        server._shutdown()
        print(f"magic-server: cannot start the engine: {exc}", file=sys.stderr)
        return 1

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        server.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    caps = server.capabilities
    workers = server.workers_status()
    where = (f"device {caps['device']}" if len(workers) == 1 else
             f"{len(workers)} workers: " + ", ".join(w["device"] for w in workers))
    for w in workers:
        log.info("worker %d: %s (%s)", w["worker"], w["device"], w["device_name"])
    print(f"magic-server ready on {server.endpoint()} ({where}, weights "
          f"{caps['weights_label'] or 'unknown'})", flush=True)
    server.serve_forever()
    log.info("stopped")
    return 0


def server_estimates(caps: dict[str, Any], engine: Any, args: argparse.Namespace,
                     keep: bool = True) -> Estimates:
    """The time estimates of a started server: kept per device and weights in the cache
    folder (keep=False: not kept, a stand-in engine), with a start-up probe of the first
    worker's engine until a job is measured."""
    step = None if args.no_warm_up else probe_seconds(engine.warm_up)
    key = f"{caps.get('device')} {caps.get('gpu_name') or ''} {caps.get('weights_label')}"
    return Estimates(caps.get("preset_iterations") or {}, key,
                     default_estimates_path() if keep else None, probe_rate(step, args.resolution))


class _LazyEngine:
    """Lets main() bind the port before the engines exist; forwards to engine `key`."""

    def __init__(self, box: dict[int, Any], key: int, device: str) -> None:
        self._box = box
        self._key = key
        self._device = device

    def __getattr__(self, name: str) -> Any:
        engine = self._box.get(self._key)
        if engine is None:
            if name == "describe":
                return lambda: loading_description(self._device)
            raise AttributeError(name)
        return getattr(engine, name)


if __name__ == "__main__":
    sys.exit(main())
