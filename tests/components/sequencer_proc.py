"""A second process drawing ids from a Redis sequencer, for the cross-process tests in
test_sequencer_contract.py. It prints `ready`, waits for a line on stdin (so every process starts
drawing at once), draws `--count` ids on each of `--threads` threads and prints them as JSON: one
list per thread, in the order that thread got them."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, when run as a script

from host.components.base import ComponentContext  # noqa: E402
from host.components.sequencer import WeakIds  # noqa: E402
from host.components.sequencer import redis as redis_sequencer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--key-prefix", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--mode", choices=["strong", "weak"], required=True)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--segment-size", type=int, default=50)
    parser.add_argument("--refill-below", type=int, default=10)
    args = parser.parse_args()

    backend = redis_sequencer.Backend(
        redis_sequencer.Config(type="redis", address=args.address, key_prefix=args.key_prefix),
        ComponentContext(name="sequencer"))
    draw = backend.next_id if args.mode == "strong" else \
        WeakIds(backend, segment_size=args.segment_size, refill_below=args.refill_below).next_id
    ids: list[list[int]] = [[] for _ in range(args.threads)]

    def work(index: int) -> None:
        for _ in range(args.count):
            ids[index].append(draw(args.key))

    print("ready", flush=True)
    sys.stdin.readline()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(args.threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    backend.close()
    print(json.dumps(ids), flush=True)


if __name__ == "__main__":
    main()
