"""The host as operators run it (`python -m host serve --workers 2`), tracing turned on the way Spin
does: OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_SERVICE_NAME, no `[tracing]` section; spans still queued
are exported when the host stops. OTEL_SDK_DISABLED=true keeps it off; a protocol other than grpc
is refused at start-up (exit 2, the variable named)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, REPO
from tests.host_process import HostProcess, free_ports, request, write_host_config
from tests.tracing.otlp_receiver import OtlpReceiver
from tests.tracing.test_propagation import INCOMING, PARENT_ID, TRACE_ID


def write_config(tmp_path: Path, listen: int, admin: int) -> Path:
    folder = tmp_path / "functions"
    folder.mkdir()
    for name in ("function_1.wasm", "function_2.wasm"):
        shutil.copy(EXAMPLES / name, folder / name)
    return write_host_config(tmp_path, folder, listen, admin, server="workers = 2", rest="""[function_defaults]
instance_num = 1
[state.state_demo]
type = "memory"
seed = { book1 = "100" }
""")


@pytest.mark.parametrize("disabled", [False, True])
def test_otel_environment_turns_export_on_in_every_worker(tmp_path: Path, disabled: bool) -> None:
    receiver = OtlpReceiver()
    listen, admin = free_ports(2)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_SERVICE_NAME": "from-env"}
    if disabled:
        env["OTEL_SDK_DISABLED"] = "true"
    process = HostProcess(tmp_path, "--config", str(write_config(tmp_path, listen, admin)), env=env)
    try:
        process.wait_ready(admin)
        for _ in range(4):  # new connections each: SO_REUSEPORT may hand them to either worker
            status, _, body = request(f"http://127.0.0.1:{listen}/?name=book1",
                                      headers={"id": "id_1", "traceparent": INCOMING})
            assert (status, body) == (200, b"There are 100 inventories for book1.")
        process.signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        process.close()
        receiver.stop()
    spans = receiver.of_trace(TRACE_ID)
    if disabled:
        assert spans == []
        return
    assert len(spans) == 8 and {span.service for span in spans} == {"from-env"}  # 4 x (id_1, id_2), all flushed
    by_id = {span.span_id: span for span in spans}
    for span in spans:
        if span.name == "id_1":
            assert span.parent_id == PARENT_ID
        else:
            assert span.name == "id_2" and by_id[span.parent_id].name == "id_1"


def test_a_protocol_other_than_grpc_is_refused_at_start(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "host", "serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                               "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
                               "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    assert done.returncode == 2
    assert "OTEL_EXPORTER_OTLP_PROTOCOL='http/protobuf': this host exports OTLP over grpc only" in done.stderr
