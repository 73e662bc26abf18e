/* Test guest without the Layotto proxy_get_id export: the host must still
 * load it (e.g. route it by configured name) and run its callbacks. */
#include "../../../sdk-guest/c/proxy_wasm.h"

void proxy_on_context_create(uint32_t context_id, uint32_t parent_context_id) {}
uint32_t proxy_on_vm_start(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_configure(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_done(uint32_t context_id) { return 1; }

proxy_action_t proxy_on_request_headers(uint32_t context_id,
                                        size_t num_headers,
                                        uint32_t end_of_stream) {
  proxy_wasm_append_buffer_str(PROXY_BUFFER_HTTP_RESPONSE_BODY, "no-id ok\n");
  return PROXY_ACTION_CONTINUE;
}
