/*
 * abi.engine._native: the guest-call and host-import crossings of the native back-end.
 *
 * With ctypes, each crossing between Python and wasm costs about a microsecond of argument
 * conversion and frame building; a proxy-wasm request makes a dozen of them. Here a guest call
 * is a vectorcall object that writes its arguments into a pre-allocated raw-value buffer and
 * calls wasmtime_func_call_unchecked directly, and a host import is one C trampoline that turns
 * the raw values into Python ints and vectorcalls the import's implementation.
 *
 * The hottest imports also have a fast path for their common case, reading and writing guest
 * memory directly; every other case goes to their Python implementation.
 *
 * The epoch ticker is one thread of this module too (start_ticker), joined when it is stopped.
 *
 * Files (their shared types and declarations are in _native.h):
 *   _native.c         this module: configure (the wasmtime functions' addresses) and init
 *   _native_calls.c   GuestState, GuestCall, HostImport, the host-import trampoline, the epoch callback
 *   _native_fast.c    the host imports' fast paths (and configure_fast, their constants)
 *   _native_ticker.c  the epoch ticker thread
 *
 * Nothing from wasmtime is linked at build time: the addresses of the wasmtime C functions used
 * (wasmtime_func_call_unchecked, wasmtime_trap_new, wasmtime_error_new, wasmtime_memory_data,
 * wasmtime_memory_data_size, wasmtime_engine_increment_epoch) are handed over by
 * abi/engine/_native_backend.py and _ticker.py (which take them from wasmtime-py's own library), so
 * the module builds with only Python's headers. Policy (errors, traps, deadlines, limits) stays in
 * Python.
 */
#include "_native.h"

call_unchecked_fn call_unchecked = NULL;
trap_new_fn trap_new = NULL;
error_new_fn error_new = NULL;
memory_data_fn memory_data = NULL;
memory_data_size_fn memory_data_size = NULL;
PyObject *guest_memory_error;

static PyObject *configure(PyObject *module, PyObject *args) {
    unsigned long long call_address, trap_new_address, error_new_address;
    unsigned long long data_address, data_size_address;
    Py_ssize_t func_size, raw_size, memory_size;
    PyObject *memory_error;
    if (!PyArg_ParseTuple(args, "KKKnnOKKn", &call_address, &trap_new_address, &error_new_address, &func_size,
                          &raw_size, &memory_error, &data_address, &data_size_address, &memory_size))
        return NULL;
    if (func_size != FUNC_BYTES || raw_size != (Py_ssize_t)sizeof(raw_value) || memory_size != MEMORY_BYTES) {
        PyErr_Format(PyExc_ImportError, "wasmtime layout changed: func %zd bytes, raw value %zd bytes, "
                     "memory %zd bytes", func_size, raw_size, memory_size);
        return NULL;
    }
    memory_data = (memory_data_fn)(uintptr_t)data_address;
    memory_data_size = (memory_data_size_fn)(uintptr_t)data_size_address;
    call_unchecked = (call_unchecked_fn)(uintptr_t)call_address;
    trap_new = (trap_new_fn)(uintptr_t)trap_new_address;
    error_new = (error_new_fn)(uintptr_t)error_new_address;
    Py_INCREF(memory_error);
    Py_XSETREF(guest_memory_error, memory_error);
    Py_RETURN_NONE;
}

static PyObject *trampoline_address(PyObject *module, PyObject *unused) {
    return PyLong_FromVoidPtr((void *)host_trampoline);
}

static PyObject *epoch_callback_address(PyObject *module, PyObject *unused) {
    return PyLong_FromVoidPtr((void *)epoch_callback);
}

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(call_unchecked, trap_new, error_new, func_size, raw_size, GuestMemoryError, memory_data, "
     "memory_data_size, memory_size): addresses of the wasmtime C functions to use, and the layouts they "
     "expect"},
    {"configure_fast", configure_fast, METH_VARARGS,
     "configure_fast(ok, not_found, max_map_entries, entry_cost, default_limit, request_headers, "
     "response_headers, request_body, response_body, http_response): the constants of the fast host-import "
     "paths"},
    {"trampoline_address", trampoline_address, METH_NOARGS,
     "the C callback to register for every host import (its env is the HostImport object)"},
    {"start_ticker", start_ticker, METH_VARARGS,
     "start_ticker(increment_epoch, engine, period_ns, keep) -> Ticker: one thread calling "
     "increment_epoch(engine) every period_ns without the GIL, `keep` held until it is stopped"},
    {"epoch_callback_address", epoch_callback_address, METH_NOARGS,
     "the C epoch-deadline callback to register for every store (its data is the GuestState)"},
    {NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "abi.engine._native", "Native guest-call and host-import crossings.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&GuestStateType) < 0 || PyType_Ready(&GuestCallType) < 0 || PyType_Ready(&HostImportType) < 0 ||
        PyType_Ready(&TickerType) < 0)
        return NULL;
    if (calls_init() < 0 || fast_init() < 0)
        return NULL;
    PyObject *module = PyModule_Create(&native_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "GuestState", (PyObject *)&GuestStateType) < 0 ||
        PyModule_AddObjectRef(module, "GuestCall", (PyObject *)&GuestCallType) < 0 ||
        PyModule_AddObjectRef(module, "HostImport", (PyObject *)&HostImportType) < 0 ||
        PyModule_AddIntConstant(module, "FAST_GET_HEADER_MAP_VALUE", FAST_GET_HEADER_MAP_VALUE) < 0 ||
        PyModule_AddIntConstant(module, "FAST_ADD_HEADER_MAP_VALUE", FAST_ADD_HEADER_MAP_VALUE) < 0 ||
        PyModule_AddIntConstant(module, "FAST_SET_BUFFER_BYTES", FAST_SET_BUFFER_BYTES) < 0 ||
        PyModule_AddIntConstant(module, "FAST_GET_BUFFER_STATUS", FAST_GET_BUFFER_STATUS) < 0 ||
        PyModule_AddIntConstant(module, "FAST_GET_BUFFER_BYTES", FAST_GET_BUFFER_BYTES) < 0 ||
        PyModule_AddIntConstant(module, "FAST_SEND_LOCAL_RESPONSE", FAST_SEND_LOCAL_RESPONSE) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
