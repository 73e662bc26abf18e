/*
 * import_cost (id "import_cost") - the guest of bench/imports.py: what one
 * runtime host import costs, timed inside one request by the host's clock.
 *
 *   curl -H 'id: import_cost' -H 'op: get_state' -H 'store: redis' \
 *        -H 'key: some-key' -H 'k: 1000' localhost:2045/
 *   -> "<ns> <failures>\n": nanoseconds for k calls (proxy_get_current_time_nanoseconds
 *      before and after the loop) and how many calls did not answer OK
 *
 * op: get_state (proxy_get_state_with_etag), set_state (proxy_set_state, no ETag),
 * lock (proxy_try_lock + proxy_unlock: one iteration is two imports), next_id
 * (proxy_get_next_id), log_level (proxy_get_log_level: a pure import, the floor)
 * and none (the empty loop). Header `store` names the component, `key` the
 * state key / lock resource / sequence. Built by bench/imports.py.
 */
#include <stdio.h>

#include "../../sdk-guest/c/proxy_wasm.h"

PROXY_WASM_FUNCTION_ID("import_cost");

void proxy_on_context_create(uint32_t context_id, uint32_t parent_context_id) {}
uint32_t proxy_on_vm_start(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_configure(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_done(uint32_t context_id) { return 1; }

/* Header `name` as a NUL-terminated string in out[cap]; 0 when absent or too long. */
static int header(const char *name, char *out, size_t cap) {
  uint8_t *value = NULL;
  size_t len = 0;
  out[0] = '\0';
  if (proxy_wasm_get_header(PROXY_MAP_HTTP_REQUEST_HEADERS, name, &value, &len) != PROXY_STATUS_OK ||
      len == 0 || len >= cap) {
    free(value);
    return 0;
  }
  memcpy(out, value, len);
  out[len] = '\0';
  free(value);
  return 1;
}

static void answer(uint32_t code, const char *text) {
  proxy_wasm_send_local_response(code, "import_cost", text, strlen(text), NULL, 0);
}

/* k calls of `op`; the number that did not answer OK, or -1 for an unknown op. */
static long run(const char *op, const char *store, const char *key, long k) {
  static const char value[] = "import-cost-value";
  long failures = 0;
  size_t store_len = strlen(store), key_len = strlen(key);
  if (strcmp(op, "get_state") == 0) {
    for (long i = 0; i < k; i++) {
      uint8_t *data = NULL, *etag = NULL;
      size_t data_len = 0, etag_len = 0;
      if (proxy_get_state_with_etag(store, store_len, key, key_len, &data, &data_len, &etag, &etag_len) !=
          PROXY_STATUS_OK || data_len == 0)
        failures++;
      free(data);
      free(etag);
    }
  } else if (strcmp(op, "set_state") == 0) {
    for (long i = 0; i < k; i++)
      if (proxy_set_state(store, store_len, key, key_len, (const uint8_t *)value, sizeof value - 1, NULL, 0) !=
          PROXY_STATUS_OK)
        failures++;
  } else if (strcmp(op, "lock") == 0) {
    static const char owner[] = "import-cost";
    for (long i = 0; i < k; i++) {
      uint32_t acquired = 0, result = 99;
      if (proxy_try_lock(store, store_len, key, key_len, owner, sizeof owner - 1, 30, &acquired) !=
          PROXY_STATUS_OK || acquired != 1)
        failures++;
      if (proxy_unlock(store, store_len, key, key_len, owner, sizeof owner - 1, &result) != PROXY_STATUS_OK ||
          result != PROXY_UNLOCK_SUCCESS)
        failures++;
    }
  } else if (strcmp(op, "next_id") == 0) {
    for (long i = 0; i < k; i++) {
      uint64_t id = 0;
      if (proxy_get_next_id(store, store_len, key, key_len, &id) != PROXY_STATUS_OK || id == 0) failures++;
    }
  } else if (strcmp(op, "log_level") == 0) {
    for (long i = 0; i < k; i++) {
      proxy_log_level_t level = 0;
      if (proxy_get_log_level(&level) != PROXY_STATUS_OK) failures++;
    }
  } else if (strcmp(op, "none") != 0) {
    return -1;
  }
  return failures;
}

static void handle(void) {
  char op[32], store[64], key[200], k_text[16];
  if (!header("op", op, sizeof op)) {
    answer(400, "no op header\n");
    return;
  }
  header("store", store, sizeof store);
  header("key", key, sizeof key);
  long k = header("k", k_text, sizeof k_text) ? strtol(k_text, NULL, 10) : 1000;
  uint64_t start = proxy_wasm_now_ns();
  long failures = run(op, store, key, k);
  uint64_t end = proxy_wasm_now_ns();
  if (failures < 0) {
    answer(400, "unknown op\n");
    return;
  }
  char text[64];
  snprintf(text, sizeof text, "%llu %ld\n", (unsigned long long)(end - start), failures);
  answer(200, text);
}

proxy_action_t proxy_on_request_headers(uint32_t context_id, size_t headers, uint32_t end_of_stream) {
  if (end_of_stream) {
    handle();
    return PROXY_ACTION_PAUSE;
  }
  return PROXY_ACTION_CONTINUE;
}

proxy_action_t proxy_on_request_body(uint32_t context_id, size_t body_size, uint32_t end_of_stream) {
  if (!end_of_stream) return PROXY_ACTION_PAUSE;
  handle();
  return PROXY_ACTION_PAUSE;
}
