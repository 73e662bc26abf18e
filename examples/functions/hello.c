/*
 * hello (id "hello") - a cheap function used for benchmarks.
 *
 *   curl -H 'id: hello' -H 'greeting: hi' localhost:2045/x
 *   -> hello method=GET path=/x greeting=hi      (and header x-hello: 1)
 *
 * Everything happens in proxy_on_request_headers; the answer is built in one
 * buffer and handed over with a single append to the response body.
 */
#include "../../sdk-guest/c/proxy_wasm.h"

PROXY_WASM_FUNCTION_ID("hello");

void proxy_on_context_create(uint32_t context_id, uint32_t parent_context_id) {}
uint32_t proxy_on_vm_start(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_configure(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_done(uint32_t context_id) { return 1; }

/* Request header value, or "-" when absent. The caller frees .owned. */
typedef struct {
  uint8_t *owned;
  const char *data;
  size_t len;
} header_t;

static header_t request_header(const char *key) {
  header_t h = {NULL, "-", 1};
  size_t len = 0;
  if (proxy_wasm_get_header(PROXY_MAP_HTTP_REQUEST_HEADERS, key, &h.owned,
                            &len) == PROXY_STATUS_OK) {
    h.data = (const char *)h.owned;
    h.len = len;
  }
  return h;
}

proxy_action_t proxy_on_request_headers(uint32_t context_id,
                                        size_t num_headers,
                                        uint32_t end_of_stream) {
  header_t method = request_header(":method");
  header_t path = request_header(":path");
  header_t greeting = request_header("greeting");

  proxy_wasm_str_t out = {0};
  proxy_wasm_str_append_cstr(&out, "hello method=");
  proxy_wasm_str_append(&out, method.data, method.len);
  proxy_wasm_str_append_cstr(&out, " path=");
  proxy_wasm_str_append(&out, path.data, path.len);
  proxy_wasm_str_append_cstr(&out, " greeting=");
  proxy_wasm_str_append(&out, greeting.data, greeting.len);
  proxy_wasm_str_append_cstr(&out, "\n");
  if (!out.failed)
    proxy_wasm_append_buffer(PROXY_BUFFER_HTTP_RESPONSE_BODY, out.data,
                             out.len);
  proxy_wasm_add_header(PROXY_MAP_HTTP_RESPONSE_HEADERS, "x-hello", "1");

  proxy_wasm_str_free(&out);
  free(method.owned);
  free(path.owned);
  free(greeting.owned);
  return PROXY_ACTION_CONTINUE;
}
