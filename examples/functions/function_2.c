/*
 * function_2 (id "id_2") - the server half of the Layotto FaaS demo.
 *
 * The whole request body is a book name; the answer is that key's value in
 * the state store "state_demo" (e.g. "100" after `redis-cli set book1 100`).
 */
#include "../../sdk-guest/c/proxy_wasm.h"

PROXY_WASM_FUNCTION_ID("id_2");

void proxy_on_context_create(uint32_t context_id, uint32_t parent_context_id) {}
uint32_t proxy_on_vm_start(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_configure(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_done(uint32_t context_id) { return 1; }

proxy_action_t proxy_on_request_body(uint32_t context_id, size_t body_size,
                                     uint32_t end_of_stream) {
  uint8_t *name = NULL;
  size_t name_len = 0;
  proxy_wasm_get_buffer(PROXY_BUFFER_HTTP_REQUEST_BODY, &name, &name_len);

  uint8_t *value = NULL;
  size_t value_len = 0;
  proxy_status_t st =
      proxy_wasm_get_state("state_demo", name, name_len, &value, &value_len);
  if (st == PROXY_STATUS_OK) {
    proxy_wasm_append_buffer(PROXY_BUFFER_HTTP_RESPONSE_BODY, value, value_len);
  } else {
    proxy_wasm_str_t msg = {0};
    proxy_wasm_str_append_cstr(&msg, "get_state failed: status ");
    proxy_wasm_str_append_u32(&msg, st);
    proxy_wasm_str_append_cstr(&msg, "\n");
    if (!msg.failed)
      proxy_wasm_send_local_response(500, "get_state_failed", msg.data,
                                     msg.len, NULL, 0);
    proxy_wasm_str_free(&msg);
  }
  free(value);
  free(name);
  return PROXY_ACTION_CONTINUE;
}
