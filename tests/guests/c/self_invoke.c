/* Test guest that invokes its own id while its instance is busy. The host
 * must fail the nested call (status 10) instead of deadlocking. Only the
 * outer request (path starting with /outer) invokes; the nested one, which
 * arrives with path "/", answers "inner". */
#include "../../../sdk-guest/c/proxy_wasm.h"

PROXY_WASM_FUNCTION_ID("self_invoke");

void proxy_on_context_create(uint32_t context_id, uint32_t parent_context_id) {}
uint32_t proxy_on_vm_start(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_configure(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_done(uint32_t context_id) { return 1; }

static int path_starts_with(const char *prefix) {
  uint8_t *path = NULL;
  size_t len = 0;
  if (proxy_wasm_get_header(PROXY_MAP_HTTP_REQUEST_HEADERS, ":path", &path,
                            &len) != PROXY_STATUS_OK)
    return 0;
  size_t plen = strlen(prefix);
  int match = len >= plen && memcmp(path, prefix, plen) == 0;
  free(path);
  return match;
}

proxy_action_t proxy_on_request_headers(uint32_t context_id,
                                        size_t num_headers,
                                        uint32_t end_of_stream) {
  if (!path_starts_with("/outer")) {
    proxy_wasm_append_buffer_str(PROXY_BUFFER_HTTP_RESPONSE_BODY, "inner\n");
    return PROXY_ACTION_CONTINUE;
  }
  uint8_t *result = NULL;
  size_t result_len = 0;
  proxy_status_t st = proxy_wasm_invoke_service(
      proxy_wasm_function_id, "/", "x", 1, &result, &result_len);
  free(result);

  proxy_wasm_str_t out = {0};
  proxy_wasm_str_append_cstr(&out, "status=");
  proxy_wasm_str_append_u32(&out, st);
  proxy_wasm_str_append_cstr(&out, "\n");
  if (!out.failed)
    proxy_wasm_append_buffer(PROXY_BUFFER_HTTP_RESPONSE_BODY, out.data,
                             out.len);
  proxy_wasm_str_free(&out);
  return PROXY_ACTION_CONTINUE;
}
