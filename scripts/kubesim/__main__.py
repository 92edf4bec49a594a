"""Run kubesim until SIGINT/SIGTERM.

    python scripts/kubesim --port 0 --data-dir DIR --kubeconfig PATH [--token T] [--persist] [--verbose]

Prints ``kubesim listening on http://127.0.0.1:PORT`` once it serves.
"""

import argparse
import os
import signal
import sys
import threading

if not __package__:
    # Run as `python scripts/kubesim`: make the package importable by name.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kubesim.server import KubeSim  # noqa: E402  pylint: disable=wrong-import-position


def main(argv=None):
    parser = argparse.ArgumentParser(prog="kubesim", description="Kubernetes API emulator on 127.0.0.1")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (0 = pick a free one)")
    parser.add_argument("--data-dir", required=True, help="directory for volumes/ and snapshots/")
    parser.add_argument("--kubeconfig", help="write a kubeconfig for the server to this path")
    parser.add_argument("--token", help="require this bearer token (full access) and put it in the kubeconfig")
    parser.add_argument("--tick", type=float, default=0.1, help="controller interval in seconds (default 0.1)")
    parser.add_argument("--verbose", action="store_true", help="log requests and controller errors to stderr")
    parser.add_argument("--persist", action="store_true",
                        help="keep objects in DATA_DIR/store.json across restarts (saved every 0.2 s and on exit)")
    args = parser.parse_args(argv)

    sim = KubeSim(args.data_dir, host=args.host, port=args.port, tick=args.tick, verbose=args.verbose, persist=args.persist)
    if args.token:
        sim.add_token(args.token)
    sim.start()
    if args.kubeconfig:
        sim.write_kubeconfig(args.kubeconfig, token=args.token)
    print("kubesim listening on %s" % sim.url, flush=True)
    done = threading.Event()

    def on_signal(signum, frame):
        done.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not done.wait(1):
        pass
    sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
