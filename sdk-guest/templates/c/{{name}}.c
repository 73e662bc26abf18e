/*
 * {{name}}: a wasm-faas function (proxy-wasm 0.2.1 + Layotto ABI), scaffolded by `wasm-faas new`.
 *
 *   wasm-faas build && wasm-faas dev        # or: wasm-faas serve --functions build
 *   wasm-faas invoke {{name}} -d you        # -> hello, you from {{name}}
 */
#include "proxy_wasm.h"

PROXY_WASM_FUNCTION_ID("{{name}}");

void proxy_on_context_create(uint32_t context_id, uint32_t parent_context_id) {}
uint32_t proxy_on_vm_start(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_configure(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_done(uint32_t context_id) { return 1; }

/* Answers "hello, <who> from {{name}}\n"; `who` is the request body, or "world". */
static void greet(const uint8_t *who, size_t who_len) {
  proxy_wasm_str_t out = {0};
  proxy_wasm_str_append_cstr(&out, "hello, ");
  if (who_len)
    proxy_wasm_str_append(&out, who, who_len);
  else
    proxy_wasm_str_append_cstr(&out, "world");
  proxy_wasm_str_append_cstr(&out, " from {{name}}\n");
  if (!out.failed) {
    proxy_wasm_append_buffer(PROXY_BUFFER_HTTP_RESPONSE_BODY, out.data, out.len);
    proxy_wasm_log(PROXY_LOG_INFO, proxy_wasm_str_cstr(&out));
  }
  proxy_wasm_str_free(&out);
}

proxy_action_t proxy_on_request_headers(uint32_t context_id, size_t num_headers,
                                        uint32_t end_of_stream) {
  if (end_of_stream) greet(NULL, 0); /* no body: answer now */
  return PROXY_ACTION_CONTINUE;
}

proxy_action_t proxy_on_request_body(uint32_t context_id, size_t body_size,
                                     uint32_t end_of_stream) {
  if (!end_of_stream) return PROXY_ACTION_CONTINUE;
  uint8_t *body = NULL;
  size_t body_len = 0;
  proxy_wasm_get_buffer(PROXY_BUFFER_HTTP_REQUEST_BODY, &body, &body_len);
  greet(body, body_len);
  free(body);
  return PROXY_ACTION_CONTINUE;
}
