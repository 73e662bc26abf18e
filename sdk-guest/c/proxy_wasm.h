/*
 * proxy_wasm.h - header-only C SDK for proxy-wasm 0.2.1 guests, plus
 *   - the Layotto FaaS extensions proxy_get_state / proxy_invoke_service and
 *     the export proxy_get_id;
 *   - this host's runtime imports: proxy_get_state_with_etag,
 *     proxy_set_state, proxy_delete_state (state with ETags),
 *     proxy_publish_event (pub/sub), proxy_try_lock / proxy_unlock (locks),
 *     proxy_get_next_id (sequencer), proxy_get_configuration (configuration);
 *   - the Layotto runtime API through proxy_call_foreign_function
 *     ("runtime.v1.<Method>", protobuf in and out).
 * abi/IMPORTS.md documents every one of them (signatures, status codes).
 *
 * Build a guest as a WASI reactor, e.g.
 *   python -m ziglang cc -target wasm32-wasi -mexec-model=reactor -O2 \
 *       -I sdk-guest/c -s -o fn.wasm fn.c
 *
 * Include this header from exactly ONE translation unit per module: it defines
 * the exports every module needs (proxy_abi_version_0_2_1 and the allocator).
 * Other translation units can define PROXY_WASM_DECLARATIONS_ONLY first.
 *
 * Ownership rule: every buffer the host hands back (through a uint8_t** out
 * parameter) was allocated with this module's allocator (malloc), so the
 * caller owns it and must free() it - also when its length is 0. An empty
 * result may also come back as NULL (free(NULL) is fine).
 *
 * All proxy-wasm values are i32 at the wasm level except the two i64 metric
 * values. Spec "bool" arguments are declared uint32_t, not C bool, so that a
 * host passing a value other than 0/1 cannot trigger undefined behaviour.
 */
#ifndef PROXY_WASM_H
#define PROXY_WASM_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Types and constants (values fixed by the proxy-wasm 0.2.1 spec)           */
/* ------------------------------------------------------------------------ */

/* Status and enum parameters are plain u32 at the ABI level, so they are
 * typedef'd to uint32_t; the enums below only name the values. */
typedef uint32_t proxy_status_t;
typedef uint32_t proxy_action_t;
typedef uint32_t proxy_buffer_type_t;
typedef uint32_t proxy_map_type_t;
typedef uint32_t proxy_log_level_t;
typedef uint32_t proxy_stream_type_t;
typedef uint32_t proxy_metric_type_t;
typedef uint32_t proxy_peer_type_t;

enum {
  PROXY_STATUS_OK = 0,
  PROXY_STATUS_NOT_FOUND = 1,
  PROXY_STATUS_BAD_ARGUMENT = 2,
  PROXY_STATUS_SERIALIZATION_FAILURE = 3,
  PROXY_STATUS_PARSE_FAILURE = 4,
  PROXY_STATUS_INVALID_MEMORY_ACCESS = 6,
  PROXY_STATUS_EMPTY = 7,
  PROXY_STATUS_CAS_MISMATCH = 8,
  PROXY_STATUS_INTERNAL_FAILURE = 10,
  PROXY_STATUS_UNIMPLEMENTED = 12,
};

enum {
  PROXY_ACTION_CONTINUE = 0,
  PROXY_ACTION_PAUSE = 1,
};

enum {
  PROXY_BUFFER_HTTP_REQUEST_BODY = 0,
  PROXY_BUFFER_HTTP_RESPONSE_BODY = 1,
  PROXY_BUFFER_DOWNSTREAM_DATA = 2,
  PROXY_BUFFER_UPSTREAM_DATA = 3,
  PROXY_BUFFER_HTTP_CALL_RESPONSE_BODY = 4,
  PROXY_BUFFER_GRPC_CALL_MESSAGE = 5,
  PROXY_BUFFER_VM_CONFIGURATION = 6,
  PROXY_BUFFER_PLUGIN_CONFIGURATION = 7,
  PROXY_BUFFER_FOREIGN_FUNCTION_ARGUMENTS = 8,
  /* Layotto reuses buffer 8 to receive the function id from proxy_get_id. */
  PROXY_BUFFER_CALL_DATA = 8,
};

enum {
  PROXY_MAP_HTTP_REQUEST_HEADERS = 0,
  PROXY_MAP_HTTP_REQUEST_TRAILERS = 1,
  PROXY_MAP_HTTP_RESPONSE_HEADERS = 2,
  PROXY_MAP_HTTP_RESPONSE_TRAILERS = 3,
  PROXY_MAP_GRPC_CALL_INITIAL_METADATA = 4,
  PROXY_MAP_GRPC_CALL_TRAILING_METADATA = 5,
  PROXY_MAP_HTTP_CALL_RESPONSE_HEADERS = 6,
  PROXY_MAP_HTTP_CALL_RESPONSE_TRAILERS = 7,
};

enum {
  PROXY_LOG_TRACE = 0,
  PROXY_LOG_DEBUG = 1,
  PROXY_LOG_INFO = 2,
  PROXY_LOG_WARN = 3,
  PROXY_LOG_ERROR = 4,
  PROXY_LOG_CRITICAL = 5,
};

enum {
  PROXY_STREAM_HTTP_REQUEST = 0,
  PROXY_STREAM_HTTP_RESPONSE = 1,
  PROXY_STREAM_DOWNSTREAM = 2,
  PROXY_STREAM_UPSTREAM = 3,
};

enum {
  PROXY_METRIC_COUNTER = 0,
  PROXY_METRIC_GAUGE = 1,
  PROXY_METRIC_HISTOGRAM = 2,
};

enum {
  PROXY_PEER_UNKNOWN = 0,
  PROXY_PEER_LOCAL = 1,
  PROXY_PEER_REMOTE = 2,
};

/* proxy_set_buffer_bytes(type, PROXY_APPEND, 0, ...) appends: a start at or
 * past the end of the buffer means "append" (max size_t is always past it). */
#define PROXY_APPEND ((size_t)0xFFFFFFFFu)

/* grpc_status argument of proxy_send_local_response meaning "no gRPC status". */
#define PROXY_NO_GRPC_STATUS ((uint32_t)0xFFFFFFFFu)

/* ------------------------------------------------------------------------ */
/* Host imports (module "env")                                               */
/* ------------------------------------------------------------------------ */

/* Only imports a module actually calls end up in its .wasm, so declaring the
 * whole ABI here costs nothing. */
#define PROXY_WASM_IMPORT(name) \
  __attribute__((import_module("env"), import_name(#name)))

/* Context lifecycle */
PROXY_WASM_IMPORT(proxy_done)
proxy_status_t proxy_done(void);
PROXY_WASM_IMPORT(proxy_set_effective_context)
proxy_status_t proxy_set_effective_context(uint32_t context_id);

/* Logging */
PROXY_WASM_IMPORT(proxy_log)
proxy_status_t proxy_log(proxy_log_level_t level, const char *message_data,
                         size_t message_size);
PROXY_WASM_IMPORT(proxy_get_log_level)
proxy_status_t proxy_get_log_level(proxy_log_level_t *return_log_level);

/* Clock and timers */
PROXY_WASM_IMPORT(proxy_get_current_time_nanoseconds)
proxy_status_t proxy_get_current_time_nanoseconds(uint64_t *return_time);
PROXY_WASM_IMPORT(proxy_set_tick_period_milliseconds)
proxy_status_t proxy_set_tick_period_milliseconds(uint32_t tick_period);

/* Buffers */
PROXY_WASM_IMPORT(proxy_set_buffer_bytes)
proxy_status_t proxy_set_buffer_bytes(proxy_buffer_type_t buffer_id,
                                      size_t start, size_t size,
                                      const uint8_t *value_data,
                                      size_t value_size);
PROXY_WASM_IMPORT(proxy_get_buffer_bytes)
proxy_status_t proxy_get_buffer_bytes(proxy_buffer_type_t buffer_id,
                                      size_t start, size_t max_size,
                                      uint8_t **return_value_data,
                                      size_t *return_value_size);
PROXY_WASM_IMPORT(proxy_get_buffer_status)
proxy_status_t proxy_get_buffer_status(proxy_buffer_type_t buffer_id,
                                       size_t *return_buffer_size,
                                       uint32_t *return_ignored);

/* HTTP fields (header maps) */
PROXY_WASM_IMPORT(proxy_get_header_map_size)
proxy_status_t proxy_get_header_map_size(proxy_map_type_t map_id,
                                         size_t *return_serialized_pairs_size);
PROXY_WASM_IMPORT(proxy_get_header_map_pairs)
proxy_status_t proxy_get_header_map_pairs(proxy_map_type_t map_id,
                                          uint8_t **return_serialized_pairs_data,
                                          size_t *return_serialized_pairs_size);
PROXY_WASM_IMPORT(proxy_set_header_map_pairs)
proxy_status_t proxy_set_header_map_pairs(proxy_map_type_t map_id,
                                          const uint8_t *serialized_pairs_data,
                                          size_t serialized_pairs_size);
PROXY_WASM_IMPORT(proxy_get_header_map_value)
proxy_status_t proxy_get_header_map_value(proxy_map_type_t map_id,
                                          const char *key_data, size_t key_size,
                                          uint8_t **return_value_data,
                                          size_t *return_value_size);
PROXY_WASM_IMPORT(proxy_add_header_map_value)
proxy_status_t proxy_add_header_map_value(proxy_map_type_t map_id,
                                          const char *key_data, size_t key_size,
                                          const uint8_t *value_data,
                                          size_t value_size);
PROXY_WASM_IMPORT(proxy_replace_header_map_value)
proxy_status_t proxy_replace_header_map_value(proxy_map_type_t map_id,
                                              const char *key_data,
                                              size_t key_size,
                                              const uint8_t *value_data,
                                              size_t value_size);
PROXY_WASM_IMPORT(proxy_remove_header_map_value)
proxy_status_t proxy_remove_header_map_value(proxy_map_type_t map_id,
                                             const char *key_data,
                                             size_t key_size);

/* Common stream operations */
PROXY_WASM_IMPORT(proxy_continue_stream)
proxy_status_t proxy_continue_stream(proxy_stream_type_t stream_type);
PROXY_WASM_IMPORT(proxy_close_stream)
proxy_status_t proxy_close_stream(proxy_stream_type_t stream_type);
PROXY_WASM_IMPORT(proxy_get_status)
proxy_status_t proxy_get_status(uint32_t *return_status_code,
                                const char **return_status_message_data,
                                size_t *return_status_message_size);

/* HTTP */
PROXY_WASM_IMPORT(proxy_send_local_response)
proxy_status_t proxy_send_local_response(uint32_t status_code,
                                         const char *status_code_details_data,
                                         size_t status_code_details_size,
                                         const uint8_t *body_data,
                                         size_t body_size,
                                         const uint8_t *serialized_headers_data,
                                         size_t serialized_headers_size,
                                         uint32_t grpc_status);

/* HTTP calls */
PROXY_WASM_IMPORT(proxy_http_call)
proxy_status_t proxy_http_call(const char *upstream_name_data,
                               size_t upstream_name_size,
                               const uint8_t *serialized_headers_data,
                               size_t serialized_headers_size,
                               const uint8_t *body_data, size_t body_size,
                               const uint8_t *serialized_trailers_data,
                               size_t serialized_trailers_size,
                               uint32_t timeout, uint32_t *return_call_id);

/* gRPC calls */
PROXY_WASM_IMPORT(proxy_grpc_call)
proxy_status_t proxy_grpc_call(const char *upstream_name_data,
                               size_t upstream_name_size,
                               const char *service_name_data,
                               size_t service_name_size,
                               const char *method_name_data,
                               size_t method_name_size,
                               const uint8_t *serialized_initial_metadata_data,
                               size_t serialized_initial_metadata_size,
                               const uint8_t *message_data, size_t message_size,
                               uint32_t timeout, uint32_t *return_call_id);
PROXY_WASM_IMPORT(proxy_grpc_stream)
proxy_status_t proxy_grpc_stream(const char *upstream_name_data,
                                 size_t upstream_name_size,
                                 const char *service_name_data,
                                 size_t service_name_size,
                                 const char *method_name_data,
                                 size_t method_name_size,
                                 const uint8_t *serialized_initial_metadata_data,
                                 size_t serialized_initial_metadata_size,
                                 uint32_t *return_stream_id);
PROXY_WASM_IMPORT(proxy_grpc_send)
proxy_status_t proxy_grpc_send(uint32_t stream_id, const uint8_t *message_data,
                               size_t message_size, uint32_t end_stream);
PROXY_WASM_IMPORT(proxy_grpc_cancel)
proxy_status_t proxy_grpc_cancel(uint32_t call_or_stream_id);
PROXY_WASM_IMPORT(proxy_grpc_close)
proxy_status_t proxy_grpc_close(uint32_t call_or_stream_id);

/* Shared key-value store */
PROXY_WASM_IMPORT(proxy_set_shared_data)
proxy_status_t proxy_set_shared_data(const char *key_data, size_t key_size,
                                     const uint8_t *value_data,
                                     size_t value_size, uint32_t cas);
PROXY_WASM_IMPORT(proxy_get_shared_data)
proxy_status_t proxy_get_shared_data(const char *key_data, size_t key_size,
                                     uint8_t **return_value_data,
                                     size_t *return_value_size,
                                     uint32_t *return_cas);

/* Shared queues */
PROXY_WASM_IMPORT(proxy_register_shared_queue)
proxy_status_t proxy_register_shared_queue(const char *name_data,
                                           size_t name_size,
                                           uint32_t *return_queue_id);
PROXY_WASM_IMPORT(proxy_resolve_shared_queue)
proxy_status_t proxy_resolve_shared_queue(const char *vm_id_data,
                                          size_t vm_id_size,
                                          const char *name_data,
                                          size_t name_size,
                                          uint32_t *return_queue_id);
PROXY_WASM_IMPORT(proxy_enqueue_shared_queue)
proxy_status_t proxy_enqueue_shared_queue(uint32_t queue_id,
                                          const uint8_t *value_data,
                                          size_t value_size);
PROXY_WASM_IMPORT(proxy_dequeue_shared_queue)
proxy_status_t proxy_dequeue_shared_queue(uint32_t queue_id,
                                          uint8_t **return_value_data,
                                          size_t *return_value_size);

/* Metrics (the only i64 parameters of the ABI) */
PROXY_WASM_IMPORT(proxy_define_metric)
proxy_status_t proxy_define_metric(proxy_metric_type_t metric_type,
                                   const char *name_data, size_t name_size,
                                   uint32_t *return_metric_id);
PROXY_WASM_IMPORT(proxy_record_metric)
proxy_status_t proxy_record_metric(uint32_t metric_id, uint64_t value);
PROXY_WASM_IMPORT(proxy_increment_metric)
proxy_status_t proxy_increment_metric(uint32_t metric_id, int64_t delta);
PROXY_WASM_IMPORT(proxy_get_metric)
proxy_status_t proxy_get_metric(uint32_t metric_id, uint64_t *return_value);

/* Properties */
PROXY_WASM_IMPORT(proxy_get_property)
proxy_status_t proxy_get_property(const uint8_t *path_data, size_t path_size,
                                  uint8_t **return_value_data,
                                  size_t *return_value_size);
PROXY_WASM_IMPORT(proxy_set_property)
proxy_status_t proxy_set_property(const uint8_t *path_data, size_t path_size,
                                  const uint8_t *value_data, size_t value_size);

/* Foreign function interface */
PROXY_WASM_IMPORT(proxy_call_foreign_function)
proxy_status_t proxy_call_foreign_function(const char *name_data,
                                           size_t name_size,
                                           const uint8_t *arguments_data,
                                           size_t arguments_size,
                                           uint8_t **return_results_data,
                                           size_t *return_results_size);

/* Layotto extensions: results are allocated in guest memory by the host. */
PROXY_WASM_IMPORT(proxy_get_state)
proxy_status_t proxy_get_state(const char *store_name_data,
                               size_t store_name_size, const char *key_data,
                               size_t key_size, uint8_t **return_value_data,
                               size_t *return_value_size);
PROXY_WASM_IMPORT(proxy_invoke_service)
proxy_status_t proxy_invoke_service(const char *id_data, size_t id_size,
                                    const char *method_data, size_t method_size,
                                    const uint8_t *param_data, size_t param_size,
                                    uint8_t **return_result_data,
                                    size_t *return_result_size);

/* Runtime imports of this host (abi/IMPORTS.md). Every name is a
 * (pointer, length) pair; bytes come back as with proxy_get_state. */
PROXY_WASM_IMPORT(proxy_get_state_with_etag)
proxy_status_t proxy_get_state_with_etag(const char *store_name_data,
                                         size_t store_name_size,
                                         const char *key_data, size_t key_size,
                                         uint8_t **return_value_data,
                                         size_t *return_value_size,
                                         uint8_t **return_etag_data,
                                         size_t *return_etag_size);
/* An empty etag writes unconditionally; any other must match the stored
 * one, else PROXY_STATUS_CAS_MISMATCH. */
PROXY_WASM_IMPORT(proxy_set_state)
proxy_status_t proxy_set_state(const char *store_name_data,
                               size_t store_name_size, const char *key_data,
                               size_t key_size, const uint8_t *value_data,
                               size_t value_size, const uint8_t *etag_data,
                               size_t etag_size);
PROXY_WASM_IMPORT(proxy_delete_state)
proxy_status_t proxy_delete_state(const char *store_name_data,
                                  size_t store_name_size, const char *key_data,
                                  size_t key_size, const uint8_t *etag_data,
                                  size_t etag_size);
PROXY_WASM_IMPORT(proxy_publish_event)
proxy_status_t proxy_publish_event(const char *pubsub_name_data,
                                   size_t pubsub_name_size,
                                   const char *topic_data, size_t topic_size,
                                   const uint8_t *data, size_t data_size,
                                   const char *content_type_data,
                                   size_t content_type_size);
/* *return_acquired: 1 when the lock was taken, 0 when someone holds it. */
PROXY_WASM_IMPORT(proxy_try_lock)
proxy_status_t proxy_try_lock(const char *store_name_data,
                              size_t store_name_size,
                              const char *resource_id_data,
                              size_t resource_id_size,
                              const char *lock_owner_data,
                              size_t lock_owner_size, int32_t expire_seconds,
                              uint32_t *return_acquired);
/* *return_result: one of PROXY_UNLOCK_* below. */
PROXY_WASM_IMPORT(proxy_unlock)
proxy_status_t proxy_unlock(const char *store_name_data, size_t store_name_size,
                            const char *resource_id_data,
                            size_t resource_id_size,
                            const char *lock_owner_data, size_t lock_owner_size,
                            uint32_t *return_result);
PROXY_WASM_IMPORT(proxy_get_next_id)
proxy_status_t proxy_get_next_id(const char *store_name_data,
                                 size_t store_name_size, const char *key_data,
                                 size_t key_size, uint64_t *return_id);
/* Not ABI 0.1.0's proxy_get_configuration(data**, size*) (the plugin
 * configuration, which is buffer 7 since 0.2.0): same name, 6 parameters. */
PROXY_WASM_IMPORT(proxy_get_configuration)
proxy_status_t proxy_get_configuration(const char *store_name_data,
                                       size_t store_name_size,
                                       const char *key_data, size_t key_size,
                                       uint8_t **return_value_data,
                                       size_t *return_value_size);

/* Results of proxy_unlock (UnlockResponse.Status of the Layotto API). */
enum {
  PROXY_UNLOCK_SUCCESS = 0,
  PROXY_UNLOCK_NOT_LOCKED = 1,
  PROXY_UNLOCK_HELD_BY_OTHER = 2,
};

/* ------------------------------------------------------------------------ */
/* Callbacks (exports)                                                       */
/* ------------------------------------------------------------------------ */

/* Marks a definition as a wasm export under its own name. */
#define PROXY_WASM_EXPORT(name) __attribute__((export_name(#name)))

/* Prototypes of every callback, carrying the export attribute: a guest simply
 * defines the ones it needs (with exactly these types - the compiler checks)
 * and they are exported; undefined ones are simply absent from the module. */
PROXY_WASM_EXPORT(proxy_on_context_create)
void proxy_on_context_create(uint32_t context_id, uint32_t parent_context_id);
PROXY_WASM_EXPORT(proxy_on_done)
uint32_t proxy_on_done(uint32_t context_id);
PROXY_WASM_EXPORT(proxy_on_log)
void proxy_on_log(uint32_t context_id);
PROXY_WASM_EXPORT(proxy_on_delete)
void proxy_on_delete(uint32_t context_id);

PROXY_WASM_EXPORT(proxy_on_vm_start)
uint32_t proxy_on_vm_start(uint32_t plugin_context_id,
                           size_t vm_configuration_size);
PROXY_WASM_EXPORT(proxy_on_configure)
uint32_t proxy_on_configure(uint32_t plugin_context_id,
                            size_t plugin_configuration_size);
PROXY_WASM_EXPORT(proxy_on_tick)
void proxy_on_tick(uint32_t plugin_context_id);

PROXY_WASM_EXPORT(proxy_on_new_connection)
proxy_action_t proxy_on_new_connection(uint32_t stream_context_id);
PROXY_WASM_EXPORT(proxy_on_downstream_data)
proxy_action_t proxy_on_downstream_data(uint32_t stream_context_id,
                                        size_t data_size,
                                        uint32_t end_of_stream);
PROXY_WASM_EXPORT(proxy_on_downstream_connection_close)
void proxy_on_downstream_connection_close(uint32_t stream_context_id,
                                          proxy_peer_type_t peer_type);
PROXY_WASM_EXPORT(proxy_on_upstream_data)
proxy_action_t proxy_on_upstream_data(uint32_t stream_context_id,
                                      size_t data_size, uint32_t end_of_stream);
PROXY_WASM_EXPORT(proxy_on_upstream_connection_close)
void proxy_on_upstream_connection_close(uint32_t stream_context_id,
                                        proxy_peer_type_t peer_type);

PROXY_WASM_EXPORT(proxy_on_request_headers)
proxy_action_t proxy_on_request_headers(uint32_t stream_context_id,
                                        size_t num_headers,
                                        uint32_t end_of_stream);
PROXY_WASM_EXPORT(proxy_on_request_body)
proxy_action_t proxy_on_request_body(uint32_t stream_context_id,
                                     size_t body_size, uint32_t end_of_stream);
PROXY_WASM_EXPORT(proxy_on_request_trailers)
proxy_action_t proxy_on_request_trailers(uint32_t stream_context_id,
                                         size_t num_trailers);
PROXY_WASM_EXPORT(proxy_on_response_headers)
proxy_action_t proxy_on_response_headers(uint32_t stream_context_id,
                                         size_t num_headers,
                                         uint32_t end_of_stream);
PROXY_WASM_EXPORT(proxy_on_response_body)
proxy_action_t proxy_on_response_body(uint32_t stream_context_id,
                                      size_t body_size, uint32_t end_of_stream);
PROXY_WASM_EXPORT(proxy_on_response_trailers)
proxy_action_t proxy_on_response_trailers(uint32_t stream_context_id,
                                          size_t num_trailers);

PROXY_WASM_EXPORT(proxy_on_http_call_response)
void proxy_on_http_call_response(uint32_t plugin_context_id, uint32_t call_id,
                                 size_t num_headers, size_t body_size,
                                 size_t num_trailers);
PROXY_WASM_EXPORT(proxy_on_grpc_receive_initial_metadata)
void proxy_on_grpc_receive_initial_metadata(uint32_t plugin_context_id,
                                            uint32_t call_id,
                                            size_t num_elements);
PROXY_WASM_EXPORT(proxy_on_grpc_receive)
void proxy_on_grpc_receive(uint32_t plugin_context_id, uint32_t call_id,
                           size_t message_size);
PROXY_WASM_EXPORT(proxy_on_grpc_receive_trailing_metadata)
void proxy_on_grpc_receive_trailing_metadata(uint32_t plugin_context_id,
                                             uint32_t call_id,
                                             size_t num_elements);
PROXY_WASM_EXPORT(proxy_on_grpc_close)
void proxy_on_grpc_close(uint32_t plugin_context_id, uint32_t call_id,
                         uint32_t status_code);
PROXY_WASM_EXPORT(proxy_on_queue_ready)
void proxy_on_queue_ready(uint32_t plugin_context_id, uint32_t queue_id);
PROXY_WASM_EXPORT(proxy_on_foreign_function)
void proxy_on_foreign_function(uint32_t plugin_context_id,
                               uint32_t function_id, size_t arguments_size);

/* Layotto: reports the function id (see PROXY_WASM_FUNCTION_ID below). */
PROXY_WASM_EXPORT(proxy_get_id)
void proxy_get_id(void);

/* ------------------------------------------------------------------------ */
/* Exports every module needs                                                */
/* ------------------------------------------------------------------------ */

#ifndef PROXY_WASM_DECLARATIONS_ONLY

/* Advertises ABI 0.2.1 to the host; never called. */
PROXY_WASM_EXPORT(proxy_abi_version_0_2_1)
void proxy_abi_version_0_2_1(void) {}

#ifndef PROXY_WASM_NO_MEMORY_ALLOCATE_EXPORT
/* The host allocates every returned buffer through this export; the guest
 * releases it with free(). A 0-byte request still yields a unique non-NULL
 * pointer, because hosts treat NULL as allocation failure. */
PROXY_WASM_EXPORT(proxy_on_memory_allocate)
void *proxy_on_memory_allocate(size_t memory_size) {
  return malloc(memory_size ? memory_size : 1);
}
#else
/* Older-style modules expose only "malloc"; hosts fall back to it when
 * proxy_on_memory_allocate is absent. libc's malloc is not exported by
 * default, so export a forwarder under that name. */
__attribute__((export_name("malloc")))
void *proxy_wasm_exported_malloc(size_t memory_size) {
  return malloc(memory_size ? memory_size : 1);
}
#endif

#endif /* PROXY_WASM_DECLARATIONS_ONLY */

/* Defines the Layotto export proxy_get_id(), which reports the function id
 * through the call-data buffer (type 8). The id must be a string literal and
 * is also available to guest code as proxy_wasm_function_id. Use it once, at
 * file scope:   PROXY_WASM_FUNCTION_ID("id_1");                            */
#define PROXY_WASM_FUNCTION_ID(id)                                            \
  const char proxy_wasm_function_id[] = "" id;                                \
  void proxy_get_id(void) {                                                   \
    proxy_set_buffer_bytes(PROXY_BUFFER_CALL_DATA, 0, sizeof("" id) - 1,      \
                           (const uint8_t *)proxy_wasm_function_id,           \
                           sizeof("" id) - 1);                                \
  }                                                                           \
  /* a declaration, so that the ';' after the macro is well-formed */         \
  extern const char proxy_wasm_function_id[]

/* ------------------------------------------------------------------------ */
/* Helpers: logging and time                                                 */
/* ------------------------------------------------------------------------ */

static inline proxy_status_t proxy_wasm_log(proxy_log_level_t level,
                                            const char *message) {
  return proxy_log(level, message, strlen(message));
}

/* Unix-epoch nanoseconds, or 0 if the host cannot tell. */
static inline uint64_t proxy_wasm_now_ns(void) {
  uint64_t now = 0;
  if (proxy_get_current_time_nanoseconds(&now) != PROXY_STATUS_OK) return 0;
  return now;
}

/* ------------------------------------------------------------------------ */
/* Helpers: buffers (bodies, configuration, call data)                       */
/* ------------------------------------------------------------------------ */

/* Reads the whole buffer. On success *data is malloc'ed (may be NULL when
 * empty) and the caller frees it; on failure *data is NULL and *size 0. */
static inline proxy_status_t proxy_wasm_get_buffer(proxy_buffer_type_t type,
                                                   uint8_t **data,
                                                   size_t *size) {
  size_t total = 0;
  uint32_t ignored = 0;
  *data = NULL;
  *size = 0;
  proxy_status_t st = proxy_get_buffer_status(type, &total, &ignored);
  if (st != PROXY_STATUS_OK || total == 0) return st;
  st = proxy_get_buffer_bytes(type, 0, total, data, size);
  if (st != PROXY_STATUS_OK) {
    free(*data);
    *data = NULL;
    *size = 0;
  }
  return st;
}

static inline proxy_status_t proxy_wasm_append_buffer(proxy_buffer_type_t type,
                                                      const void *data,
                                                      size_t size) {
  return proxy_set_buffer_bytes(type, PROXY_APPEND, 0, (const uint8_t *)data,
                                size);
}

static inline proxy_status_t proxy_wasm_append_buffer_str(
    proxy_buffer_type_t type, const char *text) {
  return proxy_wasm_append_buffer(type, text, strlen(text));
}

/* Replaces the whole content: asks for the current size so that exactly the
 * existing bytes are overwritten, whatever the host does with oversize
 * ranges. */
static inline proxy_status_t proxy_wasm_replace_buffer(proxy_buffer_type_t type,
                                                       const void *data,
                                                       size_t size) {
  size_t current = 0;
  uint32_t ignored = 0;
  if (proxy_get_buffer_status(type, &current, &ignored) != PROXY_STATUS_OK)
    current = 0;
  return proxy_set_buffer_bytes(type, 0, current, (const uint8_t *)data, size);
}

/* ------------------------------------------------------------------------ */
/* Helpers: header maps                                                      */
/* ------------------------------------------------------------------------ */

/* Value of header `key`. PROXY_STATUS_NOT_FOUND when absent. On success the
 * caller frees *value (not NUL-terminated). */
static inline proxy_status_t proxy_wasm_get_header(proxy_map_type_t map,
                                                   const char *key,
                                                   uint8_t **value,
                                                   size_t *size) {
  *value = NULL;
  *size = 0;
  proxy_status_t st =
      proxy_get_header_map_value(map, key, strlen(key), value, size);
  if (st != PROXY_STATUS_OK) {
    free(*value);
    *value = NULL;
    *size = 0;
  }
  return st;
}

static inline proxy_status_t proxy_wasm_add_header(proxy_map_type_t map,
                                                   const char *key,
                                                   const char *value) {
  return proxy_add_header_map_value(map, key, strlen(key),
                                    (const uint8_t *)value, strlen(value));
}

static inline proxy_status_t proxy_wasm_replace_header(proxy_map_type_t map,
                                                       const char *key,
                                                       const char *value) {
  return proxy_replace_header_map_value(map, key, strlen(key),
                                        (const uint8_t *)value, strlen(value));
}

/* One header for serialization; both strings NUL-terminated. */
typedef struct {
  const char *key;
  const char *value;
} proxy_wasm_header_t;

static inline void proxy_wasm_put_u32le_(uint8_t *out, uint32_t v) {
  out[0] = (uint8_t)v;
  out[1] = (uint8_t)(v >> 8);
  out[2] = (uint8_t)(v >> 16);
  out[3] = (uint8_t)(v >> 24);
}

static inline uint32_t proxy_wasm_get_u32le_(const uint8_t *in) {
  return (uint32_t)in[0] | ((uint32_t)in[1] << 8) | ((uint32_t)in[2] << 16) |
         ((uint32_t)in[3] << 24);
}

/* Serializes pairs in the proxy-wasm map encoding:
 *   u32 count, count x (u32 key_len, u32 value_len),
 *   then every key and value, each followed by one NUL byte (little-endian).
 * On success the caller frees *out. */
static inline proxy_status_t proxy_wasm_serialize_headers(
    const proxy_wasm_header_t *headers, size_t count, uint8_t **out,
    size_t *out_size) {
  size_t total = 4 + 8 * count;
  for (size_t i = 0; i < count; i++)
    total += strlen(headers[i].key) + strlen(headers[i].value) + 2;
  uint8_t *buf = (uint8_t *)malloc(total);
  *out = NULL;
  *out_size = 0;
  if (buf == NULL) return PROXY_STATUS_INTERNAL_FAILURE;

  proxy_wasm_put_u32le_(buf, (uint32_t)count);
  uint8_t *sizes = buf + 4;
  uint8_t *text = buf + 4 + 8 * count;
  for (size_t i = 0; i < count; i++) {
    size_t klen = strlen(headers[i].key);
    size_t vlen = strlen(headers[i].value);
    proxy_wasm_put_u32le_(sizes + 8 * i, (uint32_t)klen);
    proxy_wasm_put_u32le_(sizes + 8 * i + 4, (uint32_t)vlen);
    memcpy(text, headers[i].key, klen + 1); /* copies the NUL too */
    text += klen + 1;
    memcpy(text, headers[i].value, vlen + 1);
    text += vlen + 1;
  }
  *out = buf;
  *out_size = total;
  return PROXY_STATUS_OK;
}

/* Walks a serialized map (as returned by proxy_get_header_map_pairs) with
 * bounds checks, so a malformed map from the host cannot make us read outside
 * the buffer. Keys/values point into the map and are NUL-terminated there.
 *
 *   proxy_wasm_map_iter_t it;
 *   if (proxy_wasm_map_iter_init(&it, data, size))
 *     while (proxy_wasm_map_next(&it, &k, &klen, &v, &vlen)) { ... }
 */
typedef struct {
  const uint8_t *data;
  size_t size;
  uint32_t count;
  uint32_t index;
  size_t offset; /* of the next key */
} proxy_wasm_map_iter_t;

/* Returns 1 when the map header is well-formed (an empty map - size 0 or a
 * single 0x00 byte - is well-formed with count 0), else 0. */
static inline int proxy_wasm_map_iter_init(proxy_wasm_map_iter_t *it,
                                           const uint8_t *data, size_t size) {
  it->data = data;
  it->size = size;
  it->count = 0;
  it->index = 0;
  it->offset = 0;
  if (data == NULL || size < 4) return 1;
  uint32_t count = proxy_wasm_get_u32le_(data);
  if ((uint64_t)4 + (uint64_t)8 * count > size) return 0;
  it->count = count;
  it->offset = 4 + (size_t)8 * count;
  return 1;
}

/* Returns 1 and the next pair, or 0 at the end or on malformed input. */
static inline int proxy_wasm_map_next(proxy_wasm_map_iter_t *it,
                                      const char **key, size_t *key_size,
                                      const char **value, size_t *value_size) {
  if (it->index >= it->count) return 0;
  const uint8_t *sizes = it->data + 4 + (size_t)8 * it->index;
  uint64_t klen = proxy_wasm_get_u32le_(sizes);
  uint64_t vlen = proxy_wasm_get_u32le_(sizes + 4);
  if ((uint64_t)it->offset + klen + 1 + vlen + 1 > it->size) {
    it->index = it->count; /* stop for good */
    return 0;
  }
  *key = (const char *)(it->data + it->offset);
  *key_size = (size_t)klen;
  *value = (const char *)(it->data + it->offset + klen + 1);
  *value_size = (size_t)vlen;
  it->offset += (size_t)(klen + 1 + vlen + 1);
  it->index++;
  return 1;
}

/* ------------------------------------------------------------------------ */
/* Helpers: local responses                                                  */
/* ------------------------------------------------------------------------ */

/* Answers the request directly with `status_code`, `body` and `headers`
 * (count pairs, may be 0). `details` is a short machine-readable reason. */
static inline proxy_status_t proxy_wasm_send_local_response(
    uint32_t status_code, const char *details, const void *body,
    size_t body_size, const proxy_wasm_header_t *headers, size_t count) {
  uint8_t *map = NULL;
  size_t map_size = 0;
  proxy_status_t st =
      proxy_wasm_serialize_headers(headers, count, &map, &map_size);
  if (st != PROXY_STATUS_OK) return st;
  st = proxy_send_local_response(status_code, details, strlen(details),
                                 (const uint8_t *)body, body_size, map,
                                 map_size, PROXY_NO_GRPC_STATUS);
  free(map);
  return st;
}

/* ------------------------------------------------------------------------ */
/* Helpers: Layotto runtime capabilities                                     */
/* ------------------------------------------------------------------------ */

/* Reads `key` from state store `store`. A missing key gives OK with an empty
 * value. On success the caller frees *value (which may be NULL if empty). */
static inline proxy_status_t proxy_wasm_get_state(const char *store,
                                                  const void *key,
                                                  size_t key_size,
                                                  uint8_t **value,
                                                  size_t *value_size) {
  *value = NULL;
  *value_size = 0;
  proxy_status_t st = proxy_get_state(store, strlen(store), (const char *)key,
                                      key_size, value, value_size);
  if (st != PROXY_STATUS_OK) {
    free(*value);
    *value = NULL;
    *value_size = 0;
  }
  return st;
}

/* Calls function `id` (HTTP path `method`, "" meaning "/") with body `param`.
 * On success *result holds the answer body; the caller frees it. */
static inline proxy_status_t proxy_wasm_invoke_service(
    const char *id, const char *method, const void *param, size_t param_size,
    uint8_t **result, size_t *result_size) {
  *result = NULL;
  *result_size = 0;
  proxy_status_t st = proxy_invoke_service(
      id, strlen(id), method, strlen(method), (const uint8_t *)param,
      param_size, result, result_size);
  if (st != PROXY_STATUS_OK) {
    free(*result);
    *result = NULL;
    *result_size = 0;
  }
  return st;
}

/* ------------------------------------------------------------------------ */
/* Helpers: runtime capabilities (state with ETags, pub/sub, locks,          */
/* sequencer, configuration, the runtime API as foreign functions)           */
/* ------------------------------------------------------------------------ */

/* Names (store, key, topic, resource, owner) are NUL-terminated strings.
 * ETags are opaque bytes: pass back exactly what proxy_wasm_get_state_etag
 * returned, or NULL/0 for "no ETag" (last write wins). */

/* Releases a host result after a failed call, so callers never free. */
static inline void proxy_wasm_drop_(uint8_t **data, size_t *size) {
  free(*data);
  *data = NULL;
  *size = 0;
}

/* Reads `key` and its ETag. A missing key gives OK with an empty value and an
 * empty ETag. On success the caller frees *value and *etag (either may be
 * NULL when empty). */
static inline proxy_status_t proxy_wasm_get_state_etag(
    const char *store, const char *key, uint8_t **value, size_t *value_size,
    uint8_t **etag, size_t *etag_size) {
  *value = NULL;
  *value_size = 0;
  *etag = NULL;
  *etag_size = 0;
  proxy_status_t st = proxy_get_state_with_etag(
      store, strlen(store), key, strlen(key), value, value_size, etag,
      etag_size);
  if (st != PROXY_STATUS_OK) {
    proxy_wasm_drop_(value, value_size);
    proxy_wasm_drop_(etag, etag_size);
  }
  return st;
}

/* Saves `value` under `key`. With an ETag the write happens only if the
 * stored ETag is still that one, else PROXY_STATUS_CAS_MISMATCH: read again
 * and retry. */
static inline proxy_status_t proxy_wasm_set_state(const char *store,
                                                  const char *key,
                                                  const void *value,
                                                  size_t value_size,
                                                  const void *etag,
                                                  size_t etag_size) {
  return proxy_set_state(store, strlen(store), key, strlen(key),
                         (const uint8_t *)value, value_size,
                         (const uint8_t *)etag, etag_size);
}

/* Deletes `key` (OK when it was absent); the same ETag rule as set_state. */
static inline proxy_status_t proxy_wasm_delete_state(const char *store,
                                                     const char *key,
                                                     const void *etag,
                                                     size_t etag_size) {
  return proxy_delete_state(store, strlen(store), key, strlen(key),
                            (const uint8_t *)etag, etag_size);
}

/* Publishes `data` to `topic` of `pubsub`. `content_type` (e.g.
 * "application/json") may be NULL: the host's default is used. */
static inline proxy_status_t proxy_wasm_publish(const char *pubsub,
                                                const char *topic,
                                                const void *data,
                                                size_t data_size,
                                                const char *content_type) {
  if (content_type == NULL) content_type = "";
  return proxy_publish_event(pubsub, strlen(pubsub), topic, strlen(topic),
                             (const uint8_t *)data, data_size, content_type,
                             strlen(content_type));
}

/* Tries once to take lock `resource` for `owner` for `expire_seconds` (> 0).
 * On OK, *acquired is 1 when taken and 0 when another owner holds it. */
static inline proxy_status_t proxy_wasm_try_lock(const char *store,
                                                 const char *resource,
                                                 const char *owner,
                                                 int32_t expire_seconds,
                                                 int *acquired) {
  uint32_t got = 0;
  proxy_status_t st =
      proxy_try_lock(store, strlen(store), resource, strlen(resource), owner,
                     strlen(owner), expire_seconds, &got);
  *acquired = st == PROXY_STATUS_OK && got == 1;
  return st;
}

/* Releases lock `resource` held by `owner`. On OK, *result is one of
 * PROXY_UNLOCK_SUCCESS, PROXY_UNLOCK_NOT_LOCKED (expired or never taken),
 * PROXY_UNLOCK_HELD_BY_OTHER. */
static inline proxy_status_t proxy_wasm_unlock(const char *store,
                                               const char *resource,
                                               const char *owner,
                                               uint32_t *result) {
  *result = 0;
  return proxy_unlock(store, strlen(store), resource, strlen(resource), owner,
                      strlen(owner), result);
}

/* The next id of sequence `key` in sequencer `store` (ids increase per
 * key). */
static inline proxy_status_t proxy_wasm_next_id(const char *store,
                                                const char *key,
                                                uint64_t *id) {
  *id = 0;
  return proxy_get_next_id(store, strlen(store), key, strlen(key), id);
}

/* The content of configuration item `key` (the store's default group and
 * label). PROXY_STATUS_NOT_FOUND when there is no such item. On success the
 * caller frees *value. */
static inline proxy_status_t proxy_wasm_get_configuration(const char *store,
                                                          const char *key,
                                                          uint8_t **value,
                                                          size_t *value_size) {
  *value = NULL;
  *value_size = 0;
  proxy_status_t st = proxy_get_configuration(store, strlen(store), key,
                                              strlen(key), value, value_size);
  if (st != PROXY_STATUS_OK) proxy_wasm_drop_(value, value_size);
  return st;
}

/* Calls host foreign function `name`, e.g. "runtime.v1.GetState" with a
 * serialized GetStateRequest; *result is the serialized response (an Empty
 * response is 0 bytes). On success the caller frees *result. */
static inline proxy_status_t proxy_wasm_call_foreign(const char *name,
                                                     const void *args,
                                                     size_t args_size,
                                                     uint8_t **result,
                                                     size_t *result_size) {
  *result = NULL;
  *result_size = 0;
  proxy_status_t st = proxy_call_foreign_function(
      name, strlen(name), (const uint8_t *)args, args_size, result,
      result_size);
  if (st != PROXY_STATUS_OK) proxy_wasm_drop_(result, result_size);
  return st;
}

/* ------------------------------------------------------------------------ */
/* Helpers: building text without printf (keeps modules a few KB)            */
/* ------------------------------------------------------------------------ */

/* A growable byte string. Zero-initialize it: proxy_wasm_str_t s = {0};
 * Allocation failures are sticky (`failed`), so callers check once at the
 * end instead of after every append. */
typedef struct {
  char *data;
  size_t len;
  size_t cap;
  int failed;
} proxy_wasm_str_t;

static inline void proxy_wasm_str_append(proxy_wasm_str_t *s, const void *p,
                                         size_t n) {
  if (s->failed || n == 0) return;
  if (s->len + n > s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 64;
    while (cap < s->len + n) cap *= 2;
    char *grown = (char *)realloc(s->data, cap);
    if (grown == NULL) {
      s->failed = 1;
      return;
    }
    s->data = grown;
    s->cap = cap;
  }
  memcpy(s->data + s->len, p, n);
  s->len += n;
}

static inline void proxy_wasm_str_append_cstr(proxy_wasm_str_t *s,
                                              const char *text) {
  proxy_wasm_str_append(s, text, strlen(text));
}

static inline void proxy_wasm_str_append_u32(proxy_wasm_str_t *s, uint32_t v) {
  char digits[10];
  size_t n = 0;
  do {
    digits[sizeof(digits) - 1 - n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  proxy_wasm_str_append(s, digits + sizeof(digits) - n, n);
}

static inline void proxy_wasm_str_append_u64(proxy_wasm_str_t *s, uint64_t v) {
  char digits[20];
  size_t n = 0;
  do {
    digits[sizeof(digits) - 1 - n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  proxy_wasm_str_append(s, digits + sizeof(digits) - n, n);
}

/* The text as a NUL-terminated string (for names such as state keys), or
 * NULL after an allocation failure. The NUL is not counted in len. */
static inline const char *proxy_wasm_str_cstr(proxy_wasm_str_t *s) {
  proxy_wasm_str_append(s, "", 1);
  if (s->failed) return NULL;
  s->len--;
  return s->data;
}

static inline void proxy_wasm_str_free(proxy_wasm_str_t *s) {
  free(s->data);
  s->data = NULL;
  s->len = s->cap = 0;
  s->failed = 0;
}

#ifdef __cplusplus
}
#endif

#endif /* PROXY_WASM_H */
