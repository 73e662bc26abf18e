/* Test guest that echoes all request headers, in the host's order, as
 * "key: value" lines (checks proxy_get_header_map_pairs serialization). */
#include "../../../sdk-guest/c/proxy_wasm.h"

PROXY_WASM_FUNCTION_ID("echo_headers");

void proxy_on_context_create(uint32_t context_id, uint32_t parent_context_id) {}
uint32_t proxy_on_vm_start(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_configure(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_done(uint32_t context_id) { return 1; }

proxy_action_t proxy_on_request_headers(uint32_t context_id,
                                        size_t num_headers,
                                        uint32_t end_of_stream) {
  uint8_t *map = NULL;
  size_t map_len = 0;
  proxy_status_t st =
      proxy_get_header_map_pairs(PROXY_MAP_HTTP_REQUEST_HEADERS, &map, &map_len);

  proxy_wasm_str_t out = {0};
  proxy_wasm_map_iter_t it;
  if (st == PROXY_STATUS_OK && proxy_wasm_map_iter_init(&it, map, map_len)) {
    const char *key, *value;
    size_t key_len, value_len;
    while (proxy_wasm_map_next(&it, &key, &key_len, &value, &value_len)) {
      proxy_wasm_str_append(&out, key, key_len);
      proxy_wasm_str_append_cstr(&out, ": ");
      proxy_wasm_str_append(&out, value, value_len);
      proxy_wasm_str_append_cstr(&out, "\n");
    }
  }
  if (!out.failed && out.len > 0)
    proxy_wasm_append_buffer(PROXY_BUFFER_HTTP_RESPONSE_BODY, out.data,
                             out.len);
  proxy_wasm_str_free(&out);
  free(map);
  return PROXY_ACTION_CONTINUE;
}
