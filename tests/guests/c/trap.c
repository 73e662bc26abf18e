/* Test guest that traps (wasm "unreachable") when header x-trap is present;
 * the host must answer with an error and keep serving with a fresh instance.
 * Otherwise answers "ok". */
#include "../../../sdk-guest/c/proxy_wasm.h"

PROXY_WASM_FUNCTION_ID("trap");

void proxy_on_context_create(uint32_t context_id, uint32_t parent_context_id) {}
uint32_t proxy_on_vm_start(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_configure(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_done(uint32_t context_id) { return 1; }

proxy_action_t proxy_on_request_headers(uint32_t context_id,
                                        size_t num_headers,
                                        uint32_t end_of_stream) {
  uint8_t *value = NULL;
  size_t len = 0;
  if (proxy_wasm_get_header(PROXY_MAP_HTTP_REQUEST_HEADERS, "x-trap", &value,
                            &len) == PROXY_STATUS_OK)
    __builtin_trap();
  proxy_wasm_append_buffer_str(PROXY_BUFFER_HTTP_RESPONSE_BODY, "ok\n");
  return PROXY_ACTION_CONTINUE;
}
