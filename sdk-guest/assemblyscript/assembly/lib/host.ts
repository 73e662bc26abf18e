// Small helpers over raw proxy-wasm imports for what @solo-io/proxy-runtime 0.1.8 lacks or gets wrong:
// - its get_shared_data/set_shared_data/register_shared_queue wrappers pass values where the ABI
//   expects out-pointers (and drop the CAS), so shared data and queues go through the raw imports here;
// - it has no wrapper for proxy_set_buffer_bytes (its `proxy_set_buffer_status` is bound to
//   proxy_get_buffer_status), so that import is declared here.
import * as imports from "@solo-io/proxy-runtime/imports";
import { free } from "@solo-io/proxy-runtime/malloc";
import { WasmResultValues } from "@solo-io/proxy-runtime";

// @ts-ignore: decorator
@external("env", "proxy_set_buffer_bytes")
declare function proxy_set_buffer_bytes(typ: i32, start: u32, length: u32, data: usize, size: usize): u32;

export const BUFFER_HTTP_RESPONSE_BODY: i32 = 1;
export const BUFFER_HTTP_CALL_RESPONSE_BODY: i32 = 4;

/** Out-parameters the host writes into: a (pointer, size) pair plus one u32 (CAS or token). */
class OutParams {
  ptr: usize = 0;
  size: usize = 0;
  word: u32 = 0;

  ptrAddr(): usize { return changetype<usize>(this) + offsetof<OutParams>("ptr"); }
  sizeAddr(): usize { return changetype<usize>(this) + offsetof<OutParams>("size"); }
  wordAddr(): usize { return changetype<usize>(this) + offsetof<OutParams>("word"); }

  reset(): void { this.ptr = 0; this.size = 0; this.word = 0; }

  /** Copy the host-allocated bytes out and give the allocation (made through `malloc`) back. */
  take(): ArrayBuffer {
    const out = new ArrayBuffer(<i32>this.size);
    if (this.ptr != 0) {
      if (this.size > 0) memory.copy(changetype<usize>(out), this.ptr, this.size);
      free(this.ptr);
    }
    this.ptr = 0;
    this.size = 0;
    return out;
  }
}

const out = new OutParams();

/** Replace (start 0, length max) a buffer, e.g. the HTTP response body. */
export function setBuffer(typ: i32, data: ArrayBuffer): WasmResultValues {
  return proxy_set_buffer_bytes(typ, 0, u32.MAX_VALUE, changetype<usize>(data), data.byteLength);
}

export function getBuffer(typ: i32, start: u32, length: u32): ArrayBuffer {
  out.reset();
  const result = imports.proxy_get_buffer_bytes(typ, start, length, out.ptrAddr(), out.sizeAddr());
  if (result != WasmResultValues.Ok) return new ArrayBuffer(0);
  return out.take();
}

export class SharedValue {
  result: WasmResultValues = WasmResultValues.Ok;
  value: ArrayBuffer = new ArrayBuffer(0);
  cas: u32 = 0;
}

export function getSharedData(key: string): SharedValue {
  const k = String.UTF8.encode(key);
  out.reset();
  const found = new SharedValue();
  found.result = imports.proxy_get_shared_data(changetype<usize>(k), k.byteLength, out.ptrAddr(), out.sizeAddr(),
                                               out.wordAddr());
  found.cas = out.word;
  if (found.result == WasmResultValues.Ok) found.value = out.take();
  return found;
}

export function setSharedData(key: string, value: ArrayBuffer, cas: u32): WasmResultValues {
  const k = String.UTF8.encode(key);
  return imports.proxy_set_shared_data(changetype<usize>(k), k.byteLength, changetype<usize>(value), value.byteLength,
                                       cas);
}

export class QueueToken {
  result: WasmResultValues = WasmResultValues.Ok;
  token: u32 = 0;
}

export function registerSharedQueue(name: string): QueueToken {
  const n = String.UTF8.encode(name);
  out.reset();
  const registered = new QueueToken();
  registered.result = imports.proxy_register_shared_queue(changetype<usize>(n), n.byteLength, out.wordAddr());
  registered.token = out.word;
  return registered;
}

export function enqueueSharedQueue(token: u32, data: ArrayBuffer): WasmResultValues {
  return imports.proxy_enqueue_shared_queue(token, changetype<usize>(data), data.byteLength);
}

export class Dequeued {
  result: WasmResultValues = WasmResultValues.Ok;
  data: ArrayBuffer = new ArrayBuffer(0);
}

export function dequeueSharedQueue(token: u32): Dequeued {
  out.reset();
  const item = new Dequeued();
  item.result = imports.proxy_dequeue_shared_queue(token, out.ptrAddr(), out.sizeAddr());
  if (item.result == WasmResultValues.Ok) item.data = out.take();
  return item;
}
