/*
 * cpu_hash (id "cpu_hash") - a CPU-bound function for benchmarks.
 *
 *   curl -H 'id: cpu_hash' localhost:2045/
 *   -> 8 rounds of 64-bit FNV-1a over a 1 MiB buffer, as 16 hex digits + "\n"
 *
 * Nearly all the time is spent inside guest code with no host calls, so two
 * requests on two instances only run in parallel if the host releases the
 * GIL while the guest runs. Built by bench/run.py, not by scripts/.
 */
#include "../../sdk-guest/c/proxy_wasm.h"

PROXY_WASM_FUNCTION_ID("cpu_hash");

#define BUFFER_SIZE (1u << 20)
#define ROUNDS 8u
#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint8_t buffer[BUFFER_SIZE];
static int buffer_ready = 0;

void proxy_on_context_create(uint32_t context_id, uint32_t parent_context_id) {}
uint32_t proxy_on_vm_start(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_configure(uint32_t context_id, size_t size) { return 1; }
uint32_t proxy_on_done(uint32_t context_id) { return 1; }

/* Fill the buffer once per instance with xorshift noise, so the hash is not
 * over zeros (which an optimizer could reason about). */
static void fill_buffer(void) {
  uint32_t x = 2463534242u;
  for (size_t i = 0; i < BUFFER_SIZE; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    buffer[i] = (uint8_t)x;
  }
  buffer_ready = 1;
}

/* Each round starts from the previous digest, so rounds cannot be merged. */
static uint64_t hash_rounds(void) {
  uint64_t h = FNV_OFFSET;
  for (uint32_t round = 0; round < ROUNDS; round++) {
    h ^= round;
    for (size_t i = 0; i < BUFFER_SIZE; i++) {
      h ^= buffer[i];
      h *= FNV_PRIME;
    }
  }
  return h;
}

proxy_action_t proxy_on_request_headers(uint32_t context_id,
                                        size_t num_headers,
                                        uint32_t end_of_stream) {
  if (!buffer_ready) fill_buffer();
  uint64_t h = hash_rounds();
  static const char hex[] = "0123456789abcdef";
  char out[17];
  for (int i = 0; i < 16; i++) out[i] = hex[(h >> (60 - 4 * i)) & 0xf];
  out[16] = '\n';
  proxy_wasm_append_buffer(PROXY_BUFFER_HTTP_RESPONSE_BODY, out, sizeof(out));
  return PROXY_ACTION_CONTINUE;
}
