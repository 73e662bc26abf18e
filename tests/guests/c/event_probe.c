/*
 * event_probe - a subscriber for the events tests. Its plugin configuration
 * is the number of deliveries of each event it refuses (500) before it
 * accepts one ("2": fails twice, then succeeds; "-1": always fails). Each
 * delivery of an event (ce-id) is counted in shared data "attempts:<id>";
 * an accepted event is saved in state store "events" as "got:<id>" = body.
 */
#include <stdio.h>

#include "../../../sdk-guest/c/proxy_wasm.h"

PROXY_WASM_FUNCTION_ID("event_probe");

static long refusals = 0;

void proxy_on_context_create(uint32_t context_id, uint32_t parent_context_id) {}
uint32_t proxy_on_vm_start(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_done(uint32_t context_id) { return 1; }

uint32_t proxy_on_configure(uint32_t context_id, size_t size) {
  uint8_t *config = NULL;
  size_t len = 0;
  if (proxy_wasm_get_buffer(PROXY_BUFFER_PLUGIN_CONFIGURATION, &config, &len) == PROXY_STATUS_OK && len) {
    char text[32] = {0};
    memcpy(text, config, len < sizeof text - 1 ? len : sizeof text - 1);
    refusals = strtol(text, NULL, 10);
  }
  free(config);
  return 1;
}

/* attempts:<id> += 1 (compare-and-swap); the new count, or 0 on failure. */
static unsigned long count_attempt(const char *key) {
  for (int i = 0; i < 100; i++) {
    uint8_t *value = NULL;
    size_t len = 0;
    uint32_t cas = 0;
    unsigned long count = 0;
    proxy_status_t st = proxy_get_shared_data(key, strlen(key), &value, &len, &cas);
    if (st == PROXY_STATUS_OK && len) {
      char text[24] = {0};
      memcpy(text, value, len < sizeof text - 1 ? len : sizeof text - 1);
      count = strtoul(text, NULL, 10);
    }
    free(value);
    char next[24];
    int n = snprintf(next, sizeof next, "%lu", count + 1);
    if (proxy_set_shared_data(key, strlen(key), (const uint8_t *)next, (size_t)n, cas) == PROXY_STATUS_OK)
      return count + 1;
  }
  return 0;
}

static void answer(uint32_t code, const char *text) {
  proxy_wasm_send_local_response(code, "event_probe", text, strlen(text), NULL, 0);
}

static void handle(void) {
  uint8_t *id = NULL;
  size_t id_len = 0;
  if (proxy_wasm_get_header(PROXY_MAP_HTTP_REQUEST_HEADERS, "ce-id", &id, &id_len) != PROXY_STATUS_OK ||
      id_len == 0 || id_len > 200) {
    free(id);
    answer(400, "no ce-id\n");
    return;
  }
  char key[256];
  snprintf(key, sizeof key, "attempts:%.*s", (int)id_len, (const char *)id);
  unsigned long attempt = count_attempt(key);
  if (refusals < 0 || attempt <= (unsigned long)refusals) {
    free(id);
    answer(500, "refused on purpose\n");
    return;
  }
  uint8_t *body = NULL;
  size_t body_len = 0;
  proxy_wasm_get_buffer(PROXY_BUFFER_HTTP_REQUEST_BODY, &body, &body_len);
  snprintf(key, sizeof key, "got:%.*s", (int)id_len, (const char *)id);
  proxy_status_t st = proxy_wasm_set_state("events", key, body, body_len, NULL, 0);
  free(body);
  free(id);
  answer(st == PROXY_STATUS_OK ? 200 : 500, st == PROXY_STATUS_OK ? "ok\n" : "save failed\n");
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
