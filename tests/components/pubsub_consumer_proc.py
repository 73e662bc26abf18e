"""A consumer in a process of its own, for the SIGKILL test in test_pubsub_contract.py: it joins a
group, fetches one message, prints its id and attempt as JSON and then sleeps without acking,
until the test kills it. What it held must come back to the group from the backend alone."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, when run as a script

from host.components.base import ComponentContext  # noqa: E402
from host.components.pubsub import BACKENDS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=sorted(BACKENDS), required=True)
    parser.add_argument("--config", required=True, help="the backend's Config fields as JSON")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--consumer", required=True)
    args = parser.parse_args()

    module = importlib.import_module(BACKENDS[args.backend])
    backend = module.Backend(module.Config(**json.loads(args.config)), ComponentContext(name="pubsub"))
    subscription = backend.subscribe(args.topic, args.group, args.consumer)
    messages = subscription.fetch(1, 10.0)
    if not messages:
        print(json.dumps({"error": "nothing to fetch"}), flush=True)
        sys.exit(1)
    print(json.dumps({"id": messages[0].id, "attempt": messages[0].attempt}), flush=True)
    time.sleep(120)  # "processing" until killed


if __name__ == "__main__":
    main()
