/* Test guest that burns CPU: spins on the host clock for x-sleep-ms
 * milliseconds (default 200) before answering "slept <ms>". Used to test
 * timeouts, instance pools and concurrency. */
#include "../../../sdk-guest/c/proxy_wasm.h"

PROXY_WASM_FUNCTION_ID("slow");

void proxy_on_context_create(uint32_t context_id, uint32_t parent_context_id) {}
uint32_t proxy_on_vm_start(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_configure(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_done(uint32_t context_id) { return 1; }

#define DEFAULT_MS 200u
#define MAX_MS 600000u /* keeps ms * 1e6 far from overflowing */

static uint32_t sleep_ms(void) {
  uint8_t *raw = NULL;
  size_t len = 0;
  if (proxy_wasm_get_header(PROXY_MAP_HTTP_REQUEST_HEADERS, "x-sleep-ms", &raw,
                            &len) != PROXY_STATUS_OK)
    return DEFAULT_MS;
  uint32_t ms = 0;
  int digits = 0;
  for (size_t i = 0; i < len && raw[i] >= '0' && raw[i] <= '9'; i++) {
    ms = ms * 10 + (uint32_t)(raw[i] - '0');
    digits++;
    if (ms > MAX_MS) {
      ms = MAX_MS;
      break;
    }
  }
  free(raw);
  return digits ? ms : DEFAULT_MS;
}

proxy_action_t proxy_on_request_headers(uint32_t context_id,
                                        size_t num_headers,
                                        uint32_t end_of_stream) {
  uint32_t ms = sleep_ms();
  uint64_t start = proxy_wasm_now_ns();
  uint64_t deadline = start + (uint64_t)ms * 1000000u;
  /* Busy-wait on purpose: the point is to occupy the instance. A host clock
   * that fails (0) ends the loop instead of spinning forever. */
  for (;;) {
    uint64_t now = proxy_wasm_now_ns();
    if (now == 0 || now >= deadline) break;
  }
  proxy_wasm_str_t out = {0};
  proxy_wasm_str_append_cstr(&out, "slept ");
  proxy_wasm_str_append_u32(&out, ms);
  proxy_wasm_str_append_cstr(&out, "\n");
  if (!out.failed)
    proxy_wasm_append_buffer(PROXY_BUFFER_HTTP_RESPONSE_BODY, out.data,
                             out.len);
  proxy_wasm_str_free(&out);
  return PROXY_ACTION_CONTINUE;
}
