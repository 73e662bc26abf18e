// {{name}}: a wasm-faas function on the AssemblyScript proxy-wasm SDK (@solo-io/proxy-runtime 0.1.8),
// scaffolded by `wasm-faas new`.
//
//   wasm-faas build && wasm-faas dev        # or: wasm-faas serve --functions build
//   wasm-faas invoke {{name}}               # -> hello, world from {{name}}
//
// The SDK picks its root context by the `root_id` setting: host/{{name}}.toml (copied beside the
// built module) sets it to "{{name}}".
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, LogLevelValues, log,
} from "@solo-io/proxy-runtime";

// The SDK has no wrapper for proxy_set_buffer_bytes (how a function writes its response body).
// @ts-ignore: decorator
@external("env", "proxy_set_buffer_bytes")
declare function proxy_set_buffer_bytes(typ: i32, start: u32, length: u32, data: usize, size: usize): u32;
const HTTP_RESPONSE_BODY: i32 = 1;

class GreeterRoot extends RootContext {
  createContext(context_id: u32): Context {
    return new Greeter(context_id, this);
  }
}

class Greeter extends Context {
  constructor(context_id: u32, root_context: GreeterRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const answer = "hello, world from {{name}}\n";
    const body = String.UTF8.encode(answer);
    proxy_set_buffer_bytes(HTTP_RESPONSE_BODY, 0, 0, changetype<usize>(body), body.byteLength);
    log(LogLevelValues.info, answer);
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32): RootContext => new GreeterRoot(context_id), "{{name}}");
