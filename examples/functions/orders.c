/*
 * orders (id "orders") - places an order with every runtime capability.
 *
 *   curl -H 'id: orders' -d book1 localhost:2045/      (or '.../?book1')
 *   -> {"id":1,"item":"book1","count":1}
 *
 * The body (or, without a body, the query string) is the item name. Under
 * the lock "orders-lock" (lock store "lockstore") it adds 1 to "order-count"
 * (state store "statestore", written with the ETag it was read with), takes
 * an id from sequencer "sequencer", saves the order as "order-<id>" and
 * publishes it to topic "orders" of pub/sub "pubsub" (order_events.c
 * receives it). A failed step answers 500 (503 when the lock stays busy)
 * with a message naming the step.
 */
#include "../../sdk-guest/c/proxy_wasm.h"

PROXY_WASM_FUNCTION_ID("orders");

#define STATE_STORE "statestore"
#define LOCK_STORE "lockstore"
#define LOCK_NAME "orders-lock"
#define LOCK_EXPIRE_S 10
#define LOCK_WAIT_NS 2000000000ull /* give up on a busy lock after 2 s */
#define LOCK_TRIES_MAX 100000
#define CAS_TRIES 5
#define ITEM_MAX 64

void proxy_on_context_create(uint32_t context_id, uint32_t parent_context_id) {}
uint32_t proxy_on_vm_start(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_configure(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_done(uint32_t context_id) { return 1; }

/* Answers `code` with a short text; `details` names the reason. */
static void answer(uint32_t code, const char *details, const char *text) {
  proxy_wasm_send_local_response(code, details, text, strlen(text), NULL, 0);
}

/* Logs and answers `code` with "<step> failed: status <n>". */
static void fail(uint32_t code, const char *step, proxy_status_t st) {
  proxy_wasm_str_t msg = {0};
  proxy_wasm_str_append_cstr(&msg, "orders: ");
  proxy_wasm_str_append_cstr(&msg, step);
  proxy_wasm_str_append_cstr(&msg, " failed: status ");
  proxy_wasm_str_append_u32(&msg, st);
  if (!msg.failed) proxy_log(PROXY_LOG_WARN, msg.data, msg.len);
  proxy_wasm_str_append_cstr(&msg, "\n");
  if (!msg.failed)
    proxy_wasm_send_local_response(code, step, msg.data, msg.len, NULL, 0);
  proxy_wasm_str_free(&msg);
}

/* Item names go into JSON unescaped, so only plain names are accepted. */
static int valid_item(const uint8_t *s, size_t len) {
  if (len == 0 || len > ITEM_MAX) return 0;
  for (size_t i = 0; i < len; i++) {
    uint8_t c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
      return 0;
  }
  return 1;
}

/* Takes the lock, retrying while another request holds it (a guest cannot
 * sleep: each try is one round trip to the lock store). Locks expire, so a
 * crashed holder blocks the others for at most LOCK_EXPIRE_S. */
static int take_lock(const char *owner) {
  uint64_t start = proxy_wasm_now_ns();
  for (uint32_t tries = 1;; tries++) {
    int acquired = 0;
    proxy_status_t st = proxy_wasm_try_lock(LOCK_STORE, LOCK_NAME, owner,
                                            LOCK_EXPIRE_S, &acquired);
    if (st != PROXY_STATUS_OK) {
      fail(500, "try_lock", st);
      return 0;
    }
    if (acquired) return 1;
    /* the cap ends the loop even if the clock stood still */
    if (proxy_wasm_now_ns() - start > LOCK_WAIT_NS || tries == LOCK_TRIES_MAX) {
      answer(503, "lock_busy", "orders: the order lock is busy, retry\n");
      return 0;
    }
  }
}

/* "" is 0; anything but digits is a parse failure. */
static proxy_status_t parse_u64(const uint8_t *s, size_t len, uint64_t *out) {
  *out = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return PROXY_STATUS_PARSE_FAILURE;
    *out = *out * 10 + (uint64_t)(s[i] - '0');
  }
  return PROXY_STATUS_OK;
}

/* order-count += 1. The lock already serializes orders; the ETag also keeps
 * the count right if the lock expired under us (then we read and retry). */
static proxy_status_t add_one(uint64_t *count) {
  proxy_status_t st = PROXY_STATUS_CAS_MISMATCH;
  for (int i = 0; i < CAS_TRIES && st == PROXY_STATUS_CAS_MISMATCH; i++) {
    uint8_t *value = NULL, *etag = NULL;
    size_t value_len = 0, etag_len = 0;
    st = proxy_wasm_get_state_etag(STATE_STORE, "order-count", &value,
                                   &value_len, &etag, &etag_len);
    if (st == PROXY_STATUS_OK) st = parse_u64(value, value_len, count);
    if (st == PROXY_STATUS_OK) {
      proxy_wasm_str_t text = {0};
      *count += 1;
      proxy_wasm_str_append_u64(&text, *count);
      st = text.failed ? PROXY_STATUS_INTERNAL_FAILURE
                       : proxy_wasm_set_state(STATE_STORE, "order-count",
                                              text.data, text.len, etag,
                                              etag_len);
      proxy_wasm_str_free(&text);
    }
    free(value);
    free(etag);
  }
  return st;
}

/* Everything done under the lock. Answers itself on failure; returns 1 and
 * the order's JSON on success. */
static int place_order(const uint8_t *item, size_t item_len,
                       proxy_wasm_str_t *json) {
  uint64_t count = 0, id = 0;
  proxy_status_t st = add_one(&count);
  if (st != PROXY_STATUS_OK) {
    fail(500, "count", st);
    return 0;
  }
  st = proxy_wasm_next_id("sequencer", "order", &id);
  if (st != PROXY_STATUS_OK) {
    fail(500, "next_id", st);
    return 0;
  }

  proxy_wasm_str_append_cstr(json, "{\"id\":");
  proxy_wasm_str_append_u64(json, id);
  proxy_wasm_str_append_cstr(json, ",\"item\":\"");
  proxy_wasm_str_append(json, item, item_len);
  proxy_wasm_str_append_cstr(json, "\",\"count\":");
  proxy_wasm_str_append_u64(json, count);
  proxy_wasm_str_append_cstr(json, "}");
  proxy_wasm_str_t key = {0};
  proxy_wasm_str_append_cstr(&key, "order-");
  proxy_wasm_str_append_u64(&key, id);
  const char *key_name = proxy_wasm_str_cstr(&key);
  if (json->failed || key_name == NULL) st = PROXY_STATUS_INTERNAL_FAILURE;
  else st = proxy_wasm_set_state(STATE_STORE, key_name, json->data, json->len,
                                 NULL, 0);
  proxy_wasm_str_free(&key);
  if (st != PROXY_STATUS_OK) {
    fail(500, "save_order", st);
    return 0;
  }

  st = proxy_wasm_publish("pubsub", "orders", json->data, json->len,
                          "application/json");
  if (st != PROXY_STATUS_OK) {
    fail(500, "publish", st);
    return 0;
  }
  return 1;
}

/* No body and no query string: proxy_on_request_body never runs. */
proxy_action_t proxy_on_request_headers(uint32_t context_id,
                                        size_t num_headers,
                                        uint32_t end_of_stream) {
  uint8_t *path = NULL;
  size_t path_len = 0;
  if (!end_of_stream ||
      proxy_wasm_get_header(PROXY_MAP_HTTP_REQUEST_HEADERS, ":path", &path,
                            &path_len) != PROXY_STATUS_OK)
    return PROXY_ACTION_CONTINUE;
  uint8_t *query = memchr(path, '?', path_len);
  int has_query = query != NULL && query + 1 != path + path_len;
  free(path);
  if (has_query) return PROXY_ACTION_CONTINUE;
  answer(400, "missing_item", "orders: send the item name as body or query\n");
  return PROXY_ACTION_PAUSE;
}

proxy_action_t proxy_on_request_body(uint32_t context_id, size_t body_size,
                                     uint32_t end_of_stream) {
  static uint32_t orders_seen; /* per instance; with the time: a unique owner */
  uint8_t *item = NULL;
  size_t item_len = 0;
  proxy_wasm_get_buffer(PROXY_BUFFER_HTTP_REQUEST_BODY, &item, &item_len);
  if (!valid_item(item, item_len)) {
    answer(400, "bad_item", "orders: item must be 1-64 of A-Z a-z 0-9 . _ -\n");
    free(item);
    return PROXY_ACTION_CONTINUE;
  }

  proxy_wasm_str_t owner = {0};
  proxy_wasm_str_append_cstr(&owner, "orders-");
  proxy_wasm_str_append_u32(&owner, ++orders_seen);
  proxy_wasm_str_append_cstr(&owner, "-");
  proxy_wasm_str_append_u64(&owner, proxy_wasm_now_ns());
  const char *owner_name = proxy_wasm_str_cstr(&owner);
  proxy_wasm_str_t json = {0};
  if (owner_name == NULL) {
    fail(500, "owner", PROXY_STATUS_INTERNAL_FAILURE);
  } else if (take_lock(owner_name)) {
    int placed = place_order(item, item_len, &json);
    uint32_t result = 0;
    proxy_status_t st = proxy_wasm_unlock(LOCK_STORE, LOCK_NAME, owner_name,
                                          &result);
    /* A failed unlock fails nothing: the lock expires anyway, and a 500
     * after a placed order would only make the client order twice. */
    if (st != PROXY_STATUS_OK || result != PROXY_UNLOCK_SUCCESS)
      proxy_wasm_log(PROXY_LOG_WARN, "orders: unlock did not succeed");
    if (placed) {
      proxy_wasm_header_t type = {"content-type", "application/json"};
      proxy_wasm_send_local_response(200, "ok", json.data, json.len, &type, 1);
    }
  }
  proxy_wasm_str_free(&json);
  proxy_wasm_str_free(&owner);
  free(item);
  return PROXY_ACTION_CONTINUE;
}
