/*
 * Fast paths: the hottest host imports' common case, without building Python frames.
 *
 * Each returns a status (>= 0: handled, the import's result), FAST_ERROR (a Python exception is
 * set, after which it goes on exactly as a failing `impl` would) or FAST_NOT_HANDLED (nothing was
 * changed: the Python implementation runs and decides). Anything unusual is left to Python — a
 * bad pointer, a non-ASCII name, a duplicate header, a limit reached, a stream-less context, a
 * malformed map — so the observable behaviour is the Python implementation's
 * (abi/imports/header_maps.py, buffers.py, stream_control.py); the constants are Python's too
 * (configure_fast).
 *
 * proxy_get_header_map_value: request headers, one ASCII value (allocated through vm._allocate).
 * proxy_add_header_map_value: response headers, an ASCII name, within the limits.
 * proxy_set_buffer_bytes: an append to the response body, within the limit.
 * proxy_get_buffer_status, proxy_get_buffer_bytes: the request or response body.
 * proxy_send_local_response: a status of 100-599 and a well-formed map with ASCII names.
 */
#include "_native.h"

#include <string.h>

#if PY_VERSION_HEX >= 0x030C0000
#define STR_READY(s) 1 /* every str is ready from 3.12 on (the macro is deprecated) */
#else
#define STR_READY(s) PyUnicode_IS_READY(s)
#endif

#define MAX_FAST_KEY 256

/* abi/imports/stream_control.py: the status codes a local response may have, and its "no gRPC
 * status" value (a status up to MAX_GRPC_STATUS adds a grpc-status header). */
#define MIN_HTTP_STATUS 100
#define MAX_HTTP_STATUS 599
#define NO_GRPC_STATUS 0xFFFFFFFFu
#define MAX_GRPC_STATUS 16

static struct {
    int configured;
    long ok, not_found;
    long long max_map_entries, entry_cost, default_limit;
    uint32_t request_headers, response_headers, request_body, response_body;
    PyObject *http_response; /* abi.http.HttpResponse */
} fast_config;

static PyObject *str_stream, *str_request_headers, *str_response, *str_headers, *str_request_body,
    *str_response_body, *str_guest_bytes, *str_allocate, *str_settings, *str_memory_limit_bytes, *str_call_maps,
    *str_local_response, *str_grpc_status;
/* HttpResponse's keywords, in the order fast_send_local_response passes them. */
static PyObject *response_kwnames;

static inline int in_memory(uint64_t ptr, uint64_t length, size_t size) {
    return ptr + length <= (uint64_t)size;
}

static inline uint32_t load_u32(const uint8_t *at) {
    return (uint32_t)at[0] | (uint32_t)at[1] << 8 | (uint32_t)at[2] << 16 | (uint32_t)at[3] << 24;
}

static inline void store_u32(uint8_t *at, uint32_t value) {
    at[0] = (uint8_t)value;
    at[1] = (uint8_t)(value >> 8);
    at[2] = (uint8_t)(value >> 16);
    at[3] = (uint8_t)(value >> 24);
}

/* Lower-cases ASCII `src` into `dst` as str.lower() does; 0 when a byte is not ASCII. */
static int ascii_lower(const uint8_t *src, size_t length, uint8_t *dst) {
    for (size_t i = 0; i < length; i++) {
        uint8_t c = src[i];
        if (c & 0x80)
            return 0;
        dst[i] = (c >= 'A' && c <= 'Z') ? (uint8_t)(c + ('a' - 'A')) : c;
    }
    return 1;
}

/* obj.name as a new reference, or NULL with no exception set (the fallback then explains). */
static PyObject *attribute(PyObject *obj, PyObject *name) {
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL)
        PyErr_Clear();
    return value;
}

/* vm.stream, or NULL when there is none (or it cannot be read). */
static PyObject *current_stream(PyObject *vm) {
    PyObject *stream = attribute(vm, str_stream);
    if (stream == Py_None)
        Py_CLEAR(stream);
    return stream;
}

/* vm.stream.<name> (a new reference), or NULL when no stream runs or it has no such attribute. */
static PyObject *stream_attribute(PyObject *vm, PyObject *name) {
    PyObject *stream = current_stream(vm);
    if (stream == NULL)
        return NULL;
    PyObject *value = attribute(stream, name);
    Py_DECREF(stream);
    return value;
}

/* An exact int as a long long; 0 when it is not one or does not fit. */
static int exact_long(PyObject *value, long long *out) {
    if (value == NULL || !PyLong_CheckExact(value))
        return 0;
    int overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(value, &overflow);
    return !overflow && !(*out == -1 && PyErr_Occurred());
}

/* abi/limits.py limit_of(vm): settings.memory_limit_bytes, or the default when 0 or None. */
static int memory_limit(PyObject *vm, long long *limit) {
    PyObject *settings = attribute(vm, str_settings);
    if (settings == NULL)
        return 0;
    PyObject *value = attribute(settings, str_memory_limit_bytes);
    Py_DECREF(settings);
    int ok = 1;
    if (value == Py_None)
        *limit = fast_config.default_limit;
    else if (exact_long(value, limit))
        *limit = *limit ? *limit : fast_config.default_limit;
    else
        ok = 0;
    Py_XDECREF(value);
    PyErr_Clear();
    return ok;
}

/* vm.return_bytes(data, ptr_ptr, size_ptr) with both out-pointers already checked: an empty result
 * is (0, 0) without calling the allocator; otherwise the bytes go into memory from the instance's
 * allocator (vm._allocate, which must be this instance's GuestCall: else FAST_NOT_HANDLED, before
 * anything changed). `data` must stay valid while the allocator runs (the caller holds its owner,
 * which the guest cannot change: a str, or a snapshot). */
static int return_bytes(GuestState *state, const void *data, Py_ssize_t length, uint32_t ptr_ptr, uint32_t size_ptr) {
    size_t size;
    uint8_t *base;
    if (length == 0) {
        base = memory_data(state->memory_context, state->memory);
        store_u32(base + ptr_ptr, 0);
        store_u32(base + size_ptr, 0);
        return (int)fast_config.ok;
    }
    PyObject *allocate = attribute(state->owner, str_allocate);
    if (allocate == NULL || Py_TYPE(allocate) != &GuestCallType || ((GuestCall *)allocate)->state != state) {
        Py_XDECREF(allocate);
        return FAST_NOT_HANDLED;
    }
    PyObject *request = PyLong_FromSsize_t(length);
    PyObject *allocated = request ? PyObject_Vectorcall(allocate, &request, 1, NULL) : NULL;
    Py_XDECREF(request);
    Py_DECREF(allocate);
    if (allocated == NULL)
        return FAST_ERROR;
    int verdict = FAST_ERROR;
    long long ptr = 0;
    if (allocated != Py_None && !exact_long(allocated, &ptr)) {
        PyErr_Clear();
        ptr = -1; /* not an address: outside memory */
    }
    size = memory_data_size(state->memory_context, state->memory); /* the allocator may have grown it */
    base = memory_data(state->memory_context, state->memory);
    if (ptr == 0) {
        PyErr_Format(guest_memory_error, "guest allocator returned 0 for %zd bytes", length);
    } else if (ptr < 0 || !in_memory((uint64_t)ptr, (uint64_t)length, size)) {
        PyErr_Format(guest_memory_error, "guest range %#llx+%zd outside memory of %zu bytes", ptr, length, size);
    } else {
        memcpy(base + ptr, data, (size_t)length);
        store_u32(base + ptr_ptr, (uint32_t)ptr);
        store_u32(base + size_ptr, (uint32_t)length);
        verdict = (int)fast_config.ok;
    }
    Py_DECREF(allocated);
    return verdict;
}

/* proxy_get_header_map_value(map_type, key_ptr, key_size, ptr_ptr, size_ptr), request headers only. */
static int fast_get_header_map_value(GuestState *state, raw_value *args) {
    uint32_t map_type = (uint32_t)args[0].low, key_ptr = (uint32_t)args[1].low, key_size = (uint32_t)args[2].low;
    uint32_t ptr_ptr = (uint32_t)args[3].low, size_ptr = (uint32_t)args[4].low;
    if (map_type != fast_config.request_headers || key_size > MAX_FAST_KEY)
        return FAST_NOT_HANDLED;
    size_t size = memory_data_size(state->memory_context, state->memory);
    uint8_t *base = memory_data(state->memory_context, state->memory);
    if (!in_memory(key_ptr, key_size, size) || !in_memory(ptr_ptr, 4, size) || !in_memory(size_ptr, 4, size))
        return FAST_NOT_HANDLED;
    uint8_t key[MAX_FAST_KEY];
    if (!ascii_lower(base + key_ptr, key_size, key))
        return FAST_NOT_HANDLED;
    PyObject *vm = state->owner;
    PyObject *pairs = stream_attribute(vm, str_request_headers);
    if (pairs == NULL || !PyList_CheckExact(pairs)) {
        Py_XDECREF(pairs);
        return FAST_NOT_HANDLED;
    }
    PyObject *value = NULL; /* borrowed from `pairs` while scanning */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pairs); i++) {
        PyObject *item = PyList_GET_ITEM(pairs, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2)
            goto not_handled;
        PyObject *name = PyTuple_GET_ITEM(item, 0);
        if (!PyUnicode_CheckExact(name) || !STR_READY(name))
            goto not_handled;
        /* str equality: other kinds never equal an ASCII string; a 1-byte one compares its bytes. */
        if (PyUnicode_KIND(name) != PyUnicode_1BYTE_KIND || PyUnicode_GET_LENGTH(name) != (Py_ssize_t)key_size ||
            memcmp(PyUnicode_DATA(name), key, key_size) != 0)
            continue;
        if (value != NULL)
            goto not_handled; /* several values: Python joins them */
        value = PyTuple_GET_ITEM(item, 1);
    }
    if (value == NULL) {
        Py_DECREF(pairs);
        return (int)fast_config.not_found;
    }
    if (!PyUnicode_CheckExact(value) || !PyUnicode_IS_COMPACT_ASCII(value))
        goto not_handled;
    /* The allocator is guest code: it may re-enter the host and change the map, so hold the value. */
    Py_INCREF(value);
    Py_DECREF(pairs);
    int verdict = return_bytes(state, PyUnicode_DATA(value), PyUnicode_GET_LENGTH(value), ptr_ptr, size_ptr);
    Py_DECREF(value);
    return verdict;
not_handled:
    Py_DECREF(pairs);
    return FAST_NOT_HANDLED;
}

/* proxy_add_header_map_value(map_type, key_ptr, key_size, value_ptr, value_size), response headers only. */
static int fast_add_header_map_value(GuestState *state, raw_value *args) {
    uint32_t map_type = (uint32_t)args[0].low, key_ptr = (uint32_t)args[1].low, key_size = (uint32_t)args[2].low;
    uint32_t value_ptr = (uint32_t)args[3].low, value_size = (uint32_t)args[4].low;
    if (map_type != fast_config.response_headers)
        return FAST_NOT_HANDLED;
    size_t size = memory_data_size(state->memory_context, state->memory);
    uint8_t *base = memory_data(state->memory_context, state->memory);
    if (!in_memory(key_ptr, key_size, size) || !in_memory(value_ptr, value_size, size))
        return FAST_NOT_HANDLED;
    PyObject *vm = state->owner;
    PyObject *call_maps = attribute(vm, str_call_maps); /* maps of a call's callback: looked up first */
    int plain = call_maps != NULL && PyDict_CheckExact(call_maps) && PyDict_GET_SIZE(call_maps) == 0;
    Py_XDECREF(call_maps);
    if (!plain)
        return FAST_NOT_HANDLED;
    PyObject *stream = current_stream(vm);
    if (stream == NULL)
        return FAST_NOT_HANDLED;
    int verdict = FAST_NOT_HANDLED;
    PyObject *response = NULL, *pairs = NULL, *held_bytes = NULL, *key = NULL, *value = NULL, *entry = NULL,
             *charged = NULL;
    long long held, limit, cost, total;
    response = attribute(stream, str_response);
    pairs = response ? attribute(response, str_headers) : NULL;
    if (pairs == NULL || !PyList_CheckExact(pairs) || PyList_GET_SIZE(pairs) + 1 > fast_config.max_map_entries)
        goto done;
    held_bytes = attribute(stream, str_guest_bytes);
    if (!exact_long(held_bytes, &held) || !memory_limit(vm, &limit))
        goto done;
    key = PyUnicode_New(key_size, 127);
    if (key == NULL)
        goto failed;
    if (!ascii_lower(base + key_ptr, key_size, PyUnicode_1BYTE_DATA(key)))
        goto done; /* Unicode lower-casing is Python's */
    value = PyUnicode_DecodeUTF8((const char *)base + value_ptr, value_size, "surrogateescape");
    if (value == NULL)
        goto failed;
    cost = (long long)key_size + PyUnicode_GET_LENGTH(value) + fast_config.entry_cost; /* limits.entry_cost */
    if (__builtin_add_overflow(held, cost, &total) || total > limit)
        goto done; /* Python raises HostLimitExceeded */
    entry = PyTuple_Pack(2, key, value);
    charged = entry ? PyLong_FromLongLong(total) : NULL;
    if (charged == NULL || PyObject_SetAttr(stream, str_guest_bytes, charged) < 0 || PyList_Append(pairs, entry) < 0)
        goto failed;
    verdict = (int)fast_config.ok;
    goto done;
failed:
    verdict = FAST_ERROR;
done:
    if (verdict == FAST_NOT_HANDLED)
        PyErr_Clear();
    Py_DECREF(stream);
    Py_XDECREF(response);
    Py_XDECREF(pairs);
    Py_XDECREF(held_bytes);
    Py_XDECREF(key);
    Py_XDECREF(value);
    Py_XDECREF(entry);
    Py_XDECREF(charged);
    return verdict;
}

/* proxy_set_buffer_bytes(buffer_type, start, size, ptr, length): an append to the response body only. */
static int fast_set_buffer_bytes(GuestState *state, raw_value *args) {
    uint32_t buffer_type = (uint32_t)args[0].low, start = (uint32_t)args[1].low;
    uint32_t ptr = (uint32_t)args[3].low, length = (uint32_t)args[4].low;
    if (buffer_type != fast_config.response_body)
        return FAST_NOT_HANDLED;
    size_t size = memory_data_size(state->memory_context, state->memory);
    uint8_t *base = memory_data(state->memory_context, state->memory);
    if (!in_memory(ptr, length, size))
        return FAST_NOT_HANDLED;
    PyObject *vm = state->owner;
    PyObject *body = stream_attribute(vm, str_response_body);
    int verdict = FAST_NOT_HANDLED;
    long long limit;
    if (body == NULL || !PyByteArray_CheckExact(body) || !memory_limit(vm, &limit))
        goto done;
    Py_ssize_t current = PyByteArray_GET_SIZE(body);
    if ((Py_ssize_t)start < current || (long long)current + length > limit)
        goto done; /* a replacement, or over the limit (Python raises HostLimitExceeded) */
    if (length > 0) {
        if (PyByteArray_Resize(body, current + (Py_ssize_t)length) < 0) {
            PyErr_Clear(); /* unchanged (e.g. exported buffers): Python raises the same error */
            goto done;
        }
        memcpy(PyByteArray_AS_STRING(body) + current, base + ptr, length);
    }
    verdict = (int)fast_config.ok;
done:
    Py_XDECREF(body);
    return verdict;
}

/* The stream's request or response body (buffers.py _buffer) as a bytearray, or NULL (nothing set). */
static PyObject *stream_body(PyObject *vm, uint32_t buffer_type) {
    PyObject *name = buffer_type == fast_config.request_body    ? str_request_body
                     : buffer_type == fast_config.response_body ? str_response_body
                                                                : NULL;
    if (name == NULL)
        return NULL;
    PyObject *body = stream_attribute(vm, name);
    if (body != NULL && !PyByteArray_CheckExact(body))
        Py_CLEAR(body);
    return body;
}

/* proxy_get_buffer_status(buffer_type, size_ptr, flags_ptr), the request or response body. */
static int fast_get_buffer_status(GuestState *state, raw_value *args) {
    uint32_t buffer_type = (uint32_t)args[0].low, size_ptr = (uint32_t)args[1].low;
    uint32_t flags_ptr = (uint32_t)args[2].low;
    size_t size = memory_data_size(state->memory_context, state->memory);
    if (!in_memory(size_ptr, 4, size) || !in_memory(flags_ptr, 4, size))
        return FAST_NOT_HANDLED;
    PyObject *body = stream_body(state->owner, buffer_type);
    if (body == NULL)
        return FAST_NOT_HANDLED;
    uint8_t *base = memory_data(state->memory_context, state->memory);
    store_u32(base + size_ptr, (uint32_t)PyByteArray_GET_SIZE(body));
    store_u32(base + flags_ptr, 0);
    Py_DECREF(body);
    return (int)fast_config.ok;
}

/* proxy_get_buffer_bytes(buffer_type, start, max_size, ptr_ptr, size_ptr), the request or response
 * body: buffer[start:start + max_size] (a start past the end is Python's: BAD_ARGUMENT). */
static int fast_get_buffer_bytes(GuestState *state, raw_value *args) {
    uint32_t buffer_type = (uint32_t)args[0].low, start = (uint32_t)args[1].low;
    uint32_t max_size = (uint32_t)args[2].low, ptr_ptr = (uint32_t)args[3].low, size_ptr = (uint32_t)args[4].low;
    size_t size = memory_data_size(state->memory_context, state->memory);
    if (!in_memory(ptr_ptr, 4, size) || !in_memory(size_ptr, 4, size))
        return FAST_NOT_HANDLED;
    PyObject *body = stream_body(state->owner, buffer_type);
    if (body == NULL)
        return FAST_NOT_HANDLED;
    Py_ssize_t current = PyByteArray_GET_SIZE(body);
    if ((uint64_t)start > (uint64_t)current) {
        Py_DECREF(body);
        return FAST_NOT_HANDLED;
    }
    Py_ssize_t length = current - (Py_ssize_t)start;
    if ((uint64_t)length > max_size)
        length = (Py_ssize_t)max_size;
    /* A snapshot, as Python's bytes(buffer[...]): the allocator is guest code and may change the body. */
    PyObject *data = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(body) + start, length);
    Py_DECREF(body);
    if (data == NULL)
        return FAST_ERROR;
    int verdict = return_bytes(state, PyBytes_AS_STRING(data), length, ptr_ptr, size_ptr);
    Py_DECREF(data);
    return verdict;
}

/* abi/maps.py decode_map(memory[ptr:ptr + size]) with the names lower-cased, as a new list of
 * (str, str); NULL with no exception set when Python must decide (a malformed map: BAD_ARGUMENT
 * there; a name that is not ASCII: Unicode lower-casing), NULL with one set on failure. */
static PyObject *decode_lowered_map(const uint8_t *data, uint64_t size) {
    if (size < 4)
        return NULL;
    uint64_t count = load_u32(data);
    uint64_t pos = 4 + 8 * count;
    if ((long long)count > fast_config.max_map_entries || pos > size)
        return NULL;
    PyObject *pairs = PyList_New((Py_ssize_t)count);
    if (pairs == NULL)
        return NULL;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t key_len = load_u32(data + 4 + 8 * i), value_len = load_u32(data + 8 + 8 * i);
        uint64_t key_end = pos + key_len, value_end = key_end + 1 + value_len;
        if (value_end + 1 > size)
            goto not_handled;
        PyObject *key = PyUnicode_New((Py_ssize_t)key_len, 127);
        if (key == NULL)
            goto failed;
        if (!ascii_lower(data + pos, key_len, PyUnicode_1BYTE_DATA(key))) {
            Py_DECREF(key);
            goto not_handled;
        }
        PyObject *value = PyUnicode_DecodeUTF8((const char *)data + key_end + 1, (Py_ssize_t)value_len,
                                               "surrogateescape");
        PyObject *entry = value ? PyTuple_Pack(2, key, value) : NULL;
        Py_DECREF(key);
        Py_XDECREF(value);
        if (entry == NULL)
            goto failed;
        PyList_SET_ITEM(pairs, (Py_ssize_t)i, entry);
        pos = value_end + 1;
    }
    return pairs;
not_handled:
    PyErr_Clear();
failed:
    Py_DECREF(pairs);
    return NULL;
}

/* proxy_send_local_response(status_code, details_ptr, details_size, body_ptr, body_size,
 * headers_ptr, headers_size, grpc_status): stream.local_response = HttpResponse(...). */
static int fast_send_local_response(GuestState *state, raw_value *args) {
    uint32_t status_code = (uint32_t)args[0].low, details_ptr = (uint32_t)args[1].low;
    uint32_t details_size = (uint32_t)args[2].low, body_ptr = (uint32_t)args[3].low;
    uint32_t body_size = (uint32_t)args[4].low, headers_ptr = (uint32_t)args[5].low;
    uint32_t headers_size = (uint32_t)args[6].low, grpc_status = (uint32_t)args[7].low;
    if (status_code < MIN_HTTP_STATUS || status_code > MAX_HTTP_STATUS || fast_config.http_response == NULL)
        return FAST_NOT_HANDLED;
    size_t size = memory_data_size(state->memory_context, state->memory);
    const uint8_t *base = memory_data(state->memory_context, state->memory);
    if (!in_memory(details_ptr, details_size, size) || !in_memory(body_ptr, body_size, size) ||
        !in_memory(headers_ptr, headers_size, size))
        return FAST_NOT_HANDLED;
    PyObject *stream = current_stream(state->owner);
    if (stream == NULL)
        return FAST_NOT_HANDLED;
    int verdict = FAST_ERROR;
    PyObject *headers = NULL, *values[4] = {NULL, NULL, NULL, NULL}, *response = NULL;
    /* Nothing that runs here calls the guest, so `base` stays valid. */
    headers = headers_size ? decode_lowered_map(base + headers_ptr, headers_size) : PyList_New(0);
    if (headers == NULL) {
        if (!PyErr_Occurred())
            verdict = FAST_NOT_HANDLED;
        goto done;
    }
    if (grpc_status != NO_GRPC_STATUS && grpc_status <= MAX_GRPC_STATUS) {
        PyObject *code = PyUnicode_FromFormat("%u", (unsigned int)grpc_status);
        PyObject *entry = code ? PyTuple_Pack(2, str_grpc_status, code) : NULL;
        int appended = entry ? PyList_Append(headers, entry) : -1;
        Py_XDECREF(code);
        Py_XDECREF(entry);
        if (appended < 0)
            goto done;
    }
    values[0] = PyLong_FromUnsignedLong(status_code);
    values[1] = Py_NewRef(headers);
    values[2] = PyBytes_FromStringAndSize((const char *)base + body_ptr, body_size);
    values[3] = PyUnicode_DecodeUTF8((const char *)base + details_ptr, details_size, "surrogateescape");
    if (values[0] == NULL || values[2] == NULL || values[3] == NULL)
        goto done;
    response = PyObject_Vectorcall(fast_config.http_response, values, 0, response_kwnames);
    if (response != NULL && PyObject_SetAttr(stream, str_local_response, response) == 0)
        verdict = (int)fast_config.ok;
done:
    Py_DECREF(stream);
    Py_XDECREF(headers);
    for (size_t i = 0; i < 4; i++)
        Py_XDECREF(values[i]);
    Py_XDECREF(response);
    return verdict;
}

int run_fast_path(int fast, GuestState *state, raw_value *args) {
    if (!fast_config.configured || !state->has_memory)
        return FAST_NOT_HANDLED;
    switch (fast) {
    case FAST_GET_HEADER_MAP_VALUE:
        return fast_get_header_map_value(state, args);
    case FAST_ADD_HEADER_MAP_VALUE:
        return fast_add_header_map_value(state, args);
    case FAST_SET_BUFFER_BYTES:
        return fast_set_buffer_bytes(state, args);
    case FAST_GET_BUFFER_STATUS:
        return fast_get_buffer_status(state, args);
    case FAST_GET_BUFFER_BYTES:
        return fast_get_buffer_bytes(state, args);
    case FAST_SEND_LOCAL_RESPONSE:
        return fast_send_local_response(state, args);
    default:
        return FAST_NOT_HANDLED;
    }
}

int fast_path_params(int fast) {
    switch (fast) {
    case FAST_GET_BUFFER_STATUS:
        return 3;
    case FAST_SEND_LOCAL_RESPONSE:
        return 8;
    default:
        return 5; /* (map or buffer type, four pointers or sizes) */
    }
}

int fast_init(void) {
    struct {
        PyObject **target;
        const char *text;
    } names[] = {{&str_stream, "stream"}, {&str_request_headers, "request_headers"}, {&str_response, "response"},
                 {&str_headers, "headers"}, {&str_response_body, "response_body"}, {&str_guest_bytes, "guest_bytes"},
                 {&str_allocate, "_allocate"}, {&str_settings, "settings"},
                 {&str_memory_limit_bytes, "memory_limit_bytes"}, {&str_call_maps, "call_maps"},
                 {&str_request_body, "request_body"}, {&str_local_response, "local_response"},
                 {&str_grpc_status, "grpc-status"}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((*names[i].target = PyUnicode_InternFromString(names[i].text)) == NULL)
            return -1;
    response_kwnames = Py_BuildValue("(ssss)", "status", "headers", "body", "local_reply_details");
    return response_kwnames != NULL ? 0 : -1;
}

/* configure_fast(ok, not_found, max_map_entries, entry_cost, default_limit, request_headers,
 * response_headers, request_body, response_body, http_response): the Python constants the fast
 * paths apply, and the class of a local response. */
PyObject *configure_fast(PyObject *module, PyObject *args) {
    long ok, not_found;
    long long max_map_entries, entry_cost, default_limit;
    unsigned int request_headers, response_headers, request_body, response_body;
    PyObject *http_response;
    if (!PyArg_ParseTuple(args, "llLLLIIIIO", &ok, &not_found, &max_map_entries, &entry_cost, &default_limit,
                          &request_headers, &response_headers, &request_body, &response_body, &http_response))
        return NULL;
    if (ok < 0 || not_found < 0 || ok > INT32_MAX || not_found > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "statuses must be small non-negative ints");
        return NULL;
    }
    if (!PyCallable_Check(http_response)) {
        PyErr_SetString(PyExc_TypeError, "http_response must be the HttpResponse class");
        return NULL;
    }
    fast_config.ok = ok;
    fast_config.not_found = not_found;
    fast_config.max_map_entries = max_map_entries;
    fast_config.entry_cost = entry_cost;
    fast_config.default_limit = default_limit;
    fast_config.request_headers = request_headers;
    fast_config.response_headers = response_headers;
    fast_config.request_body = request_body;
    fast_config.response_body = response_body;
    Py_INCREF(http_response);
    Py_XSETREF(fast_config.http_response, http_response);
    fast_config.configured = 1;
    Py_RETURN_NONE;
}
