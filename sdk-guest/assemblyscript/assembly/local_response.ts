// Denies every request with a local response: 403, `x-reason: as-sdk`, body `denied by assemblyscript\n`.
// Host settings: root_id = "local_response", plugin_config non-empty.
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, GrpcStatusValues, HeaderPair, Headers,
  send_local_response,
} from "@solo-io/proxy-runtime";

class DenyRoot extends RootContext {
  createContext(context_id: u32): Context {
    return new Deny(context_id, this);
  }
}

class Deny extends Context {
  constructor(context_id: u32, root_context: DenyRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const extra: Headers = [];
    extra.push(new HeaderPair(String.UTF8.encode("x-reason"), String.UTF8.encode("as-sdk")));
    send_local_response(403, "as_sdk_denied", String.UTF8.encode("denied by assemblyscript\n"), extra,
                        GrpcStatusValues.InvalidCode);
    return FilterHeadersStatusValues.StopIteration;
  }
}

registerRootContext((context_id: u32): RootContext => new DenyRoot(context_id), "local_response");
