/*
 * function_1 (id "id_1") - the client half of the Layotto FaaS demo.
 *
 *   curl -H 'id: id_1' 'localhost:2045/?name=book1'
 *   -> There are 100 inventories for book1.
 *
 * Reads `name` from the form-encoded body (for a request without a body the
 * host hands over the URL query string instead), asks function id_2 for the
 * stock of that book and answers with a sentence.
 */
#include "../../sdk-guest/c/proxy_wasm.h"

PROXY_WASM_FUNCTION_ID("id_1");

static const char MISSING_NAME[] = "missing query parameter 'name'\n";

void proxy_on_context_create(uint32_t context_id, uint32_t parent_context_id) {}
uint32_t proxy_on_vm_start(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_configure(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_done(uint32_t context_id) { return 1; }

static int hex_value(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Decodes application/x-www-form-urlencoded text ('+' and %XX) in place and
 * returns the new length. Malformed escapes are kept as they are. */
static size_t form_decode(uint8_t *s, size_t len) {
  size_t out = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] == '+') {
      s[out++] = ' ';
    } else if (s[i] == '%' && i + 2 < len && hex_value(s[i + 1]) >= 0 &&
               hex_value(s[i + 2]) >= 0) {
      s[out++] = (uint8_t)(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      s[out++] = s[i];
    }
  }
  return out;
}

/* Finds `key` in "a=b&key=value&..." and points *value into `form`.
 * Returns 1 if found with a non-empty value. */
static int form_field(uint8_t *form, size_t len, const char *key,
                      uint8_t **value, size_t *value_len) {
  size_t key_len = strlen(key);
  size_t start = 0;
  while (start <= len) {
    size_t end = start;
    while (end < len && form[end] != '&') end++;
    /* field is form[start, end) */
    if (end - start > key_len && form[start + key_len] == '=' &&
        memcmp(form + start, key, key_len) == 0) {
      *value = form + start + key_len + 1;
      *value_len = form_decode(*value, end - start - key_len - 1);
      return *value_len > 0;
    }
    start = end + 1;
  }
  return 0;
}

static void reject(uint32_t code, const char *details, const char *body,
                   size_t body_len) {
  proxy_wasm_send_local_response(code, details, body, body_len, NULL, 0);
}

/* A request without body and without query string never reaches
 * proxy_on_request_body, so answer the missing parameter here. */
proxy_action_t proxy_on_request_headers(uint32_t context_id,
                                        size_t num_headers,
                                        uint32_t end_of_stream) {
  if (!end_of_stream) return PROXY_ACTION_CONTINUE;
  uint8_t *path = NULL;
  size_t path_len = 0;
  if (proxy_wasm_get_header(PROXY_MAP_HTTP_REQUEST_HEADERS, ":path", &path,
                            &path_len) != PROXY_STATUS_OK)
    return PROXY_ACTION_CONTINUE; /* host without pseudo headers: no opinion */
  uint8_t *query = memchr(path, '?', path_len);
  int no_query = query == NULL || query + 1 == path + path_len;
  free(path);
  if (!no_query) return PROXY_ACTION_CONTINUE;
  reject(400, "missing_name", MISSING_NAME, sizeof(MISSING_NAME) - 1);
  return PROXY_ACTION_PAUSE;
}

proxy_action_t proxy_on_request_body(uint32_t context_id, size_t body_size,
                                     uint32_t end_of_stream) {
  uint8_t *body = NULL;
  size_t body_len = 0;
  uint8_t *name = NULL;
  size_t name_len = 0;
  proxy_wasm_get_buffer(PROXY_BUFFER_HTTP_REQUEST_BODY, &body, &body_len);
  if (!form_field(body, body_len, "name", &name, &name_len)) {
    reject(400, "missing_name", MISSING_NAME, sizeof(MISSING_NAME) - 1);
    free(body);
    return PROXY_ACTION_CONTINUE;
  }

  uint8_t *stock = NULL;
  size_t stock_len = 0;
  proxy_status_t st =
      proxy_wasm_invoke_service("id_2", "", name, name_len, &stock, &stock_len);

  proxy_wasm_str_t out = {0};
  if (st != PROXY_STATUS_OK) {
    proxy_wasm_str_append_cstr(&out, "invoke id_2 failed: status ");
    proxy_wasm_str_append_u32(&out, st);
    proxy_log(PROXY_LOG_ERROR, out.data, out.failed ? 0 : out.len);
    proxy_wasm_str_append_cstr(&out, "\n");
    if (!out.failed) reject(502, "invoke_failed", out.data, out.len);
  } else {
    proxy_wasm_str_append_cstr(&out, "There are ");
    proxy_wasm_str_append(&out, stock, stock_len);
    proxy_wasm_str_append_cstr(&out, " inventories for ");
    proxy_wasm_str_append(&out, name, name_len);
    proxy_wasm_str_append_cstr(&out, ".");
    if (!out.failed)
      proxy_wasm_append_buffer(PROXY_BUFFER_HTTP_RESPONSE_BODY, out.data,
                               out.len);
  }
  proxy_wasm_str_free(&out);
  free(stock);
  free(body);
  return PROXY_ACTION_CONTINUE;
}
