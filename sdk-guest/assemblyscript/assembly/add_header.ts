// A response-header filter that also answers as a function: on the request it writes the response
// body, on the response it adds `x-as-filter: yes` (the SDK's own hello-world shape).
// Host settings: root_id = "add_header", plugin_config non-empty (the SDK reads it in onConfigure).
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, stream_context,
} from "@solo-io/proxy-runtime";
import { BUFFER_HTTP_RESPONSE_BODY, setBuffer } from "./lib/host";

class AddHeaderRoot extends RootContext {
  createContext(context_id: u32): Context {
    return new AddHeader(context_id, this);
  }
}

class AddHeader extends Context {
  constructor(context_id: u32, root_context: AddHeaderRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    setBuffer(BUFFER_HTTP_RESPONSE_BODY, String.UTF8.encode("as-filter ok\n"));
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.response.add("x-as-filter", "yes");
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32): RootContext => new AddHeaderRoot(context_id), "add_header");
