/*
 * abi.engine._native's private header: what its C files share (the extension's layout is in
 * _native.c's opening comment). Nothing here is visible outside the module.
 */
#ifndef ABI_ENGINE_NATIVE_H
#define ABI_ENGINE_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* Shared between the module's files, never exported from the shared object. */
#define NATIVE_PRIVATE __attribute__((visibility("hidden")))

/* ---- wasmtime's C API, reached through addresses handed over by Python (configure) ------- */

/* wasmtime_val_raw_t: a 16-byte union; i32 values live in the low 4 bytes, i64 in the low 8. */
typedef struct {
    uint64_t low;
    uint64_t high;
} raw_value;

/* wasmtime_func_call_unchecked(context, func, args_and_results, len, trap_out) -> error */
typedef void *(*call_unchecked_fn)(void *, const void *, raw_value *, size_t, void **);
/* wasmtime_trap_new(message, len) -> trap */
typedef void *(*trap_new_fn)(const char *, size_t);
/* wasmtime_error_new(message) -> error */
typedef void *(*error_new_fn)(const char *);
/* wasmtime_memory_data(context, memory) -> base; wasmtime_memory_data_size(context, memory) -> bytes */
typedef uint8_t *(*memory_data_fn)(const void *, const void *);
typedef size_t (*memory_data_size_fn)(const void *, const void *);

NATIVE_PRIVATE extern call_unchecked_fn call_unchecked;
NATIVE_PRIVATE extern trap_new_fn trap_new;
NATIVE_PRIVATE extern error_new_fn error_new;
NATIVE_PRIVATE extern memory_data_fn memory_data;
NATIVE_PRIVATE extern memory_data_size_fn memory_data_size;
NATIVE_PRIVATE extern PyObject *guest_memory_error; /* abi.engine._guest.GuestMemoryError */

#define MAX_PARAMS 16
#define FUNC_BYTES 16   /* sizeof(wasmtime_func_t); checked in configure() */
#define MEMORY_BYTES 24 /* sizeof(wasmtime_memory_t); checked in configure() */

enum { KIND_I32 = 0, KIND_I64 = 1 };

/* ---- the objects of the crossings (_native_calls.c) ---------------------------------------- */

/* Per instance: what the trampolines need while its code runs. */
typedef struct {
    PyObject_HEAD
    PyObject *guest; /* the GuestBase (pending_error, _fail_native) */
    PyObject *owner; /* passed as the first argument of every host import */
    int hold_gil;    /* keep the GIL across guest calls (cheap guests) */
    double deadline_at; /* CLOCK_MONOTONIC seconds (Python's time.monotonic()) */
    /* The instance's exported "memory", for the host imports' fast paths (set_memory). */
    int has_memory;
    void *memory_context; /* wasmtime_context_t* of the instance's store */
    unsigned char memory[MEMORY_BYTES];
} GuestState;

/* One export, called like a Python function with int arguments. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    GuestState *state;
    void *context; /* wasmtime_context_t* of the instance's store */
    unsigned char func[FUNC_BYTES];
    Py_ssize_t nparams;
    unsigned char kinds[MAX_PARAMS];
    int result_kind; /* -1: no result */
    size_t nslots;
    raw_value *slots;
} GuestCall;

/* One host function, called by wasmtime through host_trampoline. */
typedef struct {
    PyObject_HEAD
    PyObject *impl;            /* impl(owner, *args) */
    PyObject *name;            /* for trap messages */
    PyObject *on_memory_error; /* int returned on GuestMemoryError, or None: such an error traps */
    Py_ssize_t nparams;
    unsigned char kinds[MAX_PARAMS];
    int result_kind;
    int fast; /* FAST_*: the common case handled in C before `impl` (0: none) */
} HostImport;

NATIVE_PRIVATE extern PyTypeObject GuestStateType, GuestCallType, HostImportType;

/* Interns the names the calls look up; -1 with an exception set on failure. */
NATIVE_PRIVATE int calls_init(void);
/* wasmtime_func_unchecked_callback_t of every host import (its env is the HostImport). */
NATIVE_PRIVATE void *host_trampoline(void *env, void *caller, raw_value *args, size_t nargs);
/* wasmtime_store_epoch_deadline_callback's callback (its data is the store's GuestState). */
NATIVE_PRIVATE void *epoch_callback(void *context, void *data, uint64_t *delta, uint8_t *kind);

/* ---- fast paths of the hottest imports (_native_fast.c) ------------------------------------ */

enum {
    FAST_NONE = 0,
    FAST_GET_HEADER_MAP_VALUE = 1,
    FAST_ADD_HEADER_MAP_VALUE = 2,
    FAST_SET_BUFFER_BYTES = 3,
    FAST_GET_BUFFER_STATUS = 4,
    FAST_GET_BUFFER_BYTES = 5,
    FAST_SEND_LOCAL_RESPONSE = 6,
    FAST_COUNT /* one past the last */
};

/* run_fast_path's verdicts besides a status (>= 0: handled, the import's result). */
#define FAST_NOT_HANDLED (-1) /* nothing was changed: the Python implementation runs and decides */
#define FAST_ERROR (-2)       /* a Python exception is set: it goes on as a failing `impl` would */

/* The number of i32 parameters (and an i32 result) the import of fast path `fast` must have. */
NATIVE_PRIVATE int fast_path_params(int fast);
NATIVE_PRIVATE int run_fast_path(int fast, GuestState *state, raw_value *args);
/* Interns the attribute names the fast paths read; -1 with an exception set on failure. */
NATIVE_PRIVATE int fast_init(void);
NATIVE_PRIVATE PyObject *configure_fast(PyObject *module, PyObject *args);

/* ---- the epoch ticker thread (_native_ticker.c) -------------------------------------------- */

NATIVE_PRIVATE extern PyTypeObject TickerType;
NATIVE_PRIVATE PyObject *start_ticker(PyObject *module, PyObject *args);

#endif
