import gc
import sys

# Start-up time (issue 16): no cyclic collections while the host imports its modules (~100 partial
# and one full pass, 20-50 ms, over objects that live as long as the process). host.cli.main runs
# the collector again: `serve` once everything is imported (host/process/serve.py: run), any other
# command at once.
gc.disable()

from host.cli import main  # noqa: E402 - after pausing the collector

sys.exit(main(collector_paused=True))
