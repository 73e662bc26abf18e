/* Test guest that exports only "malloc" (no proxy_on_memory_allocate), like
 * Rust wasm32-unknown-unknown builds: the host must allocate the
 * proxy_get_state result through malloc. Answers "book1=<value>". */
#define PROXY_WASM_NO_MEMORY_ALLOCATE_EXPORT
#include "../../../sdk-guest/c/proxy_wasm.h"

PROXY_WASM_FUNCTION_ID("malloc_only");

void proxy_on_context_create(uint32_t context_id, uint32_t parent_context_id) {}
uint32_t proxy_on_vm_start(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_configure(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_done(uint32_t context_id) { return 1; }

proxy_action_t proxy_on_request_headers(uint32_t context_id,
                                        size_t num_headers,
                                        uint32_t end_of_stream) {
  uint8_t *value = NULL;
  size_t value_len = 0;
  proxy_status_t st =
      proxy_wasm_get_state("state_demo", "book1", 5, &value, &value_len);
  proxy_wasm_str_t out = {0};
  if (st == PROXY_STATUS_OK) {
    proxy_wasm_str_append_cstr(&out, "book1=");
    proxy_wasm_str_append(&out, value, value_len);
    if (!out.failed)
      proxy_wasm_append_buffer(PROXY_BUFFER_HTTP_RESPONSE_BODY, out.data,
                               out.len);
  } else {
    proxy_wasm_str_append_cstr(&out, "get_state failed: status ");
    proxy_wasm_str_append_u32(&out, st);
    proxy_wasm_str_append_cstr(&out, "\n");
    if (!out.failed)
      proxy_wasm_send_local_response(500, "get_state_failed", out.data,
                                     out.len, NULL, 0);
  }
  proxy_wasm_str_free(&out);
  free(value);
  return PROXY_ACTION_CONTINUE;
}
