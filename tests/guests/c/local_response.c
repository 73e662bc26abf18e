/* Test guest for proxy_send_local_response: status 418, two custom headers,
 * a body, and Pause so the host stops processing the request. */
#include "../../../sdk-guest/c/proxy_wasm.h"

PROXY_WASM_FUNCTION_ID("local_response");

void proxy_on_context_create(uint32_t context_id, uint32_t parent_context_id) {}
uint32_t proxy_on_vm_start(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_configure(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_done(uint32_t context_id) { return 1; }

proxy_action_t proxy_on_request_headers(uint32_t context_id,
                                        size_t num_headers,
                                        uint32_t end_of_stream) {
  static const char body[] = "short and stout\n";
  static const proxy_wasm_header_t headers[] = {
      {"x-custom", "yes"},
      {"content-type", "text/plain"},
  };
  proxy_wasm_send_local_response(418, "teapot", body, sizeof(body) - 1,
                                 headers, 2);
  return PROXY_ACTION_PAUSE;
}
