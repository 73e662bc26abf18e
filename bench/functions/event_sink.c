/*
 * event_sink (id "event_sink") - the subscriber of bench/events.py.
 *
 * Each event (CloudEvents binary binding: POST /<topic>, header ce-id, body =
 * the event's data) is saved in state store "sink" under its ce-id, and
 * answered 200 (which acknowledges it). The same work as the bench's plain
 * redis-py consumer: read the body, write one state key. Built by the bench.
 */
#include "../../sdk-guest/c/proxy_wasm.h"

PROXY_WASM_FUNCTION_ID("event_sink");

void proxy_on_context_create(uint32_t context_id, uint32_t parent_context_id) {}
uint32_t proxy_on_vm_start(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_configure(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_done(uint32_t context_id) { return 1; }

static void answer(uint32_t code, const char *text) {
  proxy_wasm_send_local_response(code, "event_sink", text, strlen(text), NULL, 0);
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
  memcpy(key, id, id_len);
  key[id_len] = '\0';
  free(id);
  uint8_t *body = NULL;
  size_t body_len = 0;
  proxy_wasm_get_buffer(PROXY_BUFFER_HTTP_REQUEST_BODY, &body, &body_len);
  proxy_status_t st = proxy_wasm_set_state("sink", key, body, body_len, NULL, 0);
  free(body);
  if (st == PROXY_STATUS_OK)
    answer(200, "ok\n");
  else
    answer(500, "save failed\n");
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
