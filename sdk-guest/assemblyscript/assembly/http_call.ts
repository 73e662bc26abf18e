// Calls upstream cluster `echo` (GET /echo, `x-from: as`), pauses the request, and answers from the
// callback with 200 `upstream said: <upstream body>` (502 if the call could not be made or failed).
// Host settings: root_id = "http_call", plugin_config non-empty, an upstream named `echo`.
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, GrpcStatusValues, HeaderPair, Headers,
  LogLevelValues, WasmResultValues, log, send_local_response,
} from "@solo-io/proxy-runtime";
import { BUFFER_HTTP_CALL_RESPONSE_BODY, getBuffer } from "./lib/host";

function header(key: string, value: string): HeaderPair {
  return new HeaderPair(String.UTF8.encode(key), String.UTF8.encode(value));
}

function reply(status: u32, body: string): void {
  const extra: Headers = [];
  extra.push(header("content-type", "text/plain"));
  send_local_response(status, "as_http_call", String.UTF8.encode(body), extra, GrpcStatusValues.InvalidCode);
}

// No closures in AssemblyScript 0.14: the callback is a plain function that gets the origin context.
function onEchoResponse(origin: Context, headers: u32, body_size: usize, trailers: u32): void {
  if (headers == 0 && body_size == 0) {  // the SDK's way of saying "cancelled / no response"
    reply(502, "upstream call failed\n");
    return;
  }
  const body = String.UTF8.decode(getBuffer(BUFFER_HTTP_CALL_RESPONSE_BODY, 0, <u32>body_size));
  reply(200, "upstream said: " + body);
}

class HttpCallRoot extends RootContext {
  createContext(context_id: u32): Context {
    return new HttpCaller(context_id, this);
  }
}

class HttpCaller extends Context {
  constructor(context_id: u32, root_context: HttpCallRoot) {
    super(context_id, root_context);
  }

  onRequestHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const request: Headers = [];
    request.push(header(":method", "GET"));
    request.push(header(":path", "/echo"));
    request.push(header(":authority", "echo"));
    request.push(header("x-from", "as"));
    const result = this.root_context.httpCall("echo", request, new ArrayBuffer(0), [], 5000, this, onEchoResponse);
    if (result != WasmResultValues.Ok) {
      log(LogLevelValues.error, "http_call to echo failed: " + result.toString());
      reply(502, "http_call failed: " + result.toString() + "\n");
    }
    return FilterHeadersStatusValues.StopIteration;
  }
}

registerRootContext((context_id: u32): RootContext => new HttpCallRoot(context_id), "http_call");
