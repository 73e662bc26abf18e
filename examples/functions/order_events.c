/*
 * order_events (id "order_events") - the subscriber of topic "orders".
 *
 * The host delivers every event as an HTTP POST in the CloudEvents binary
 * binding: headers ce-id, ce-type, ce-source, ce-topic, ..., body = the event
 * data (the order JSON that orders.c published). This function saves the
 * data as "event-<ce-id>" and appends the ce-id to "received-orders" (a
 * comma-separated list) in state store "statestore". It answers 200 when
 * both are stored and 500 otherwise, so that the host delivers the event
 * again; a redelivered event is not listed twice.
 */
#include "../../sdk-guest/c/proxy_wasm.h"

PROXY_WASM_FUNCTION_ID("order_events");

#define STATE_STORE "statestore"
#define LIST_KEY "received-orders"
#define CAS_TRIES 5

void proxy_on_context_create(uint32_t context_id, uint32_t parent_context_id) {}
uint32_t proxy_on_vm_start(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_configure(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_done(uint32_t context_id) { return 1; }

/* Logs and answers `code` with "<step> failed: status <n>". */
static void fail(uint32_t code, const char *step, proxy_status_t st) {
  proxy_wasm_str_t msg = {0};
  proxy_wasm_str_append_cstr(&msg, "order_events: ");
  proxy_wasm_str_append_cstr(&msg, step);
  proxy_wasm_str_append_cstr(&msg, " failed: status ");
  proxy_wasm_str_append_u32(&msg, st);
  if (!msg.failed) proxy_log(PROXY_LOG_WARN, msg.data, msg.len);
  proxy_wasm_str_append_cstr(&msg, "\n");
  if (!msg.failed)
    proxy_wasm_send_local_response(code, step, msg.data, msg.len, NULL, 0);
  proxy_wasm_str_free(&msg);
}

/* 1 when `id` is one of the comma-separated entries of `list`. */
static int listed(const uint8_t *list, size_t len, const char *id) {
  size_t id_len = strlen(id);
  for (size_t start = 0; start < len;) {
    size_t end = start;
    while (end < len && list[end] != ',') end++;
    if (end - start == id_len && memcmp(list + start, id, id_len) == 0)
      return 1;
    start = end + 1;
  }
  return 0;
}

/* received-orders += ",<id>", written with the ETag it was read with and
 * read again when another delivery wrote in between. */
static proxy_status_t append_id(const char *id) {
  proxy_status_t st = PROXY_STATUS_CAS_MISMATCH;
  for (int i = 0; i < CAS_TRIES && st == PROXY_STATUS_CAS_MISMATCH; i++) {
    uint8_t *list = NULL, *etag = NULL;
    size_t list_len = 0, etag_len = 0;
    st = proxy_wasm_get_state_etag(STATE_STORE, LIST_KEY, &list, &list_len,
                                   &etag, &etag_len);
    if (st == PROXY_STATUS_OK && !listed(list, list_len, id)) {
      proxy_wasm_str_t next = {0};
      proxy_wasm_str_append(&next, list, list_len);
      if (list_len > 0) proxy_wasm_str_append_cstr(&next, ",");
      proxy_wasm_str_append_cstr(&next, id);
      st = next.failed ? PROXY_STATUS_INTERNAL_FAILURE
                       : proxy_wasm_set_state(STATE_STORE, LIST_KEY, next.data,
                                              next.len, etag, etag_len);
      proxy_wasm_str_free(&next);
    }
    free(list);
    free(etag);
  }
  return st;
}

static const char BAD_ID[] = "order_events: missing or bad ce-id\n";

/* Saves the data, then lists the id: a listed id always has its event. */
static void save(const char *event_id, const char *event_key) {
  uint8_t *data = NULL;
  size_t data_len = 0;
  proxy_wasm_get_buffer(PROXY_BUFFER_HTTP_REQUEST_BODY, &data, &data_len);
  proxy_status_t st =
      proxy_wasm_set_state(STATE_STORE, event_key, data, data_len, NULL, 0);
  free(data);
  if (st != PROXY_STATUS_OK) {
    fail(500, "save_event", st);
    return;
  }
  st = append_id(event_id);
  if (st != PROXY_STATUS_OK) fail(500, "append_id", st);
}

/* Records one event. Answers only on failure: nothing written means 200. */
static void record(void) {
  uint8_t *raw = NULL;
  size_t raw_len = 0;
  proxy_wasm_get_header(PROXY_MAP_HTTP_REQUEST_HEADERS, "ce-id", &raw,
                        &raw_len);
  proxy_wasm_str_t id = {0}, key = {0};
  proxy_wasm_str_append(&id, raw, raw_len);
  free(raw);
  const char *event_id = proxy_wasm_str_cstr(&id);
  proxy_wasm_str_append_cstr(&key, "event-");
  proxy_wasm_str_append(&key, id.data, id.len);
  const char *event_key = proxy_wasm_str_cstr(&key);

  if (event_id == NULL || event_key == NULL)
    fail(500, "memory", PROXY_STATUS_INTERNAL_FAILURE);
  else if (id.len == 0 || strlen(event_id) != id.len ||
           memchr(event_id, ',', id.len) != NULL)
    /* delivering this event again would not help */
    proxy_wasm_send_local_response(400, "bad_ce_id", BAD_ID,
                                   sizeof(BAD_ID) - 1, NULL, 0);
  else
    save(event_id, event_key);
  proxy_wasm_str_free(&key);
  proxy_wasm_str_free(&id);
}

/* Set when the headers phase recorded the request (an event with empty data
 * has no body), so that a query string handed over as body is not taken
 * for the data afterwards. An instance serves one request at a time. */
static uint32_t recorded_context;

proxy_action_t proxy_on_request_headers(uint32_t context_id,
                                        size_t num_headers,
                                        uint32_t end_of_stream) {
  if (end_of_stream) {
    recorded_context = context_id;
    record();
  }
  return PROXY_ACTION_CONTINUE;
}

proxy_action_t proxy_on_request_body(uint32_t context_id, size_t body_size,
                                     uint32_t end_of_stream) {
  if (end_of_stream && context_id != recorded_context) record();
  return PROXY_ACTION_CONTINUE;
}
