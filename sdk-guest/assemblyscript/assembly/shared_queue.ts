// Counts requests in shared data `as_counter` (get + CAS set, retried on CasMismatch), enqueues each new
// value on the queue `as_queue` registered by the root context, and answers `count=<n>`.
// The root context's onQueueReady drains the queue into the log.
// Each instance's root context also counts itself in shared data `as_instances` at start-up; answers carry
// that value in `x-instances-started` (so with N instances sharing one store it reads N) and, in
// `x-instance-requests`, how many requests the answering instance has served.
// Host settings: root_id = "shared_queue", plugin_config non-empty.
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, GrpcStatusValues, HeaderPair, Headers,
  LogLevelValues, WasmResultValues, log, send_local_response,
} from "@solo-io/proxy-runtime";
import {
  dequeueSharedQueue, enqueueSharedQueue, getSharedData, registerSharedQueue, setSharedData,
} from "./lib/host";

const COUNTER_KEY = "as_counter";
const INSTANCES_KEY = "as_instances";
const QUEUE_NAME = "as_queue";
const CAS_ATTEMPTS = 64;

class Increment {
  result: WasmResultValues = WasmResultValues.Ok;
  value: u32 = 0;
  step: string = "";
}

/** key += 1 in shared data, with compare-and-swap; a missing key counts as 0. */
function increment(key: string): Increment {
  const done = new Increment();
  for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
    const current = getSharedData(key);
    if (current.result == WasmResultValues.Ok) {
      done.value = <u32>parseInt(String.UTF8.decode(current.value)) + 1;
    } else if (current.result == WasmResultValues.NotFound) {
      done.value = 1;
    } else {
      done.result = current.result;
      done.step = "get_shared_data";
      return done;
    }
    done.result = setSharedData(key, String.UTF8.encode(done.value.toString()), current.cas);
    if (done.result != WasmResultValues.CasMismatch) break;
  }
  if (done.result != WasmResultValues.Ok) done.step = "set_shared_data";
  return done;
}

function header(key: string, value: string): HeaderPair {
  return new HeaderPair(String.UTF8.encode(key), String.UTF8.encode(value));
}

function reply(status: u32, body: string, extra: Headers = []): void {
  extra.push(header("content-type", "text/plain"));
  send_local_response(status, "as_shared_queue", String.UTF8.encode(body), extra, GrpcStatusValues.InvalidCode);
}

class CounterRoot extends RootContext {
  queue_token: u32 = 0;
  queue_ok: bool = false;
  served: u32 = 0;

  createContext(context_id: u32): Context {
    return new Counter(context_id, this);
  }

  onStart(vm_configuration_size: usize): bool {
    const started = increment(INSTANCES_KEY);
    if (started.result != WasmResultValues.Ok) {
      log(LogLevelValues.error, started.step + "(" + INSTANCES_KEY + ") failed: " + started.result.toString());
    }
    const registered = registerSharedQueue(QUEUE_NAME);
    if (registered.result != WasmResultValues.Ok) {
      log(LogLevelValues.error, "register_shared_queue(" + QUEUE_NAME + ") failed: " + registered.result.toString());
      return true;  // keep serving; requests answer 500 with the reason
    }
    this.queue_token = registered.token;
    this.queue_ok = true;
    return true;
  }

  onQueueReady(token: u32): void {
    while (true) {
      const item = dequeueSharedQueue(token);
      if (item.result != WasmResultValues.Ok) break;  // Empty: drained
      log(LogLevelValues.info, QUEUE_NAME + " dequeued count=" + String.UTF8.decode(item.data));
    }
  }
}

class Counter extends Context {
  constructor(context_id: u32, root_context: CounterRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const root = this.root_context as CounterRoot;
    root.served += 1;
    const counted = increment(COUNTER_KEY);
    if (counted.result != WasmResultValues.Ok) {
      reply(500, counted.step + "(" + COUNTER_KEY + ") failed: " + counted.result.toString() + "\n");
      return FilterHeadersStatusValues.StopIteration;
    }
    if (!root.queue_ok) {
      reply(500, "queue " + QUEUE_NAME + " is not registered\n");
      return FilterHeadersStatusValues.StopIteration;
    }
    const queued = enqueueSharedQueue(root.queue_token, String.UTF8.encode(counted.value.toString()));
    if (queued != WasmResultValues.Ok) {
      reply(500, "enqueue_shared_queue failed: " + queued.toString() + "\n");
      return FilterHeadersStatusValues.StopIteration;
    }
    const instances = getSharedData(INSTANCES_KEY);
    const extra: Headers = [];
    extra.push(header("x-instances-started",
                      instances.result == WasmResultValues.Ok ? String.UTF8.decode(instances.value) : "0"));
    extra.push(header("x-instance-requests", root.served.toString()));
    reply(200, "count=" + counted.value.toString(), extra);
    return FilterHeadersStatusValues.StopIteration;
  }
}

registerRootContext((context_id: u32): RootContext => new CounterRoot(context_id), "shared_queue");
