/*
 * abi.engine._native: the guest-call and host-import crossings of the native back-end.
 *
 * With ctypes, each crossing between Python and wasm costs about a microsecond of argument
 * conversion and frame building; a proxy-wasm request makes a dozen of them. Here a guest call
 * is a vectorcall object that writes its arguments into a pre-allocated raw-value buffer and
 * calls wasmtime_func_call_unchecked directly, and a host import is one C trampoline that turns
 * the raw values into Python ints and vectorcalls the import's implementation.
 *
 * Nothing is linked at build time: the addresses of the three wasmtime C functions used
 * (wasmtime_func_call_unchecked, wasmtime_trap_new, wasmtime_error_new) are handed over by abi/engine/_native_backend.py (which takes them from wasmtime-py's own library), so the
 * module builds with only Python's headers. Policy (errors, traps, deadlines) stays in Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

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

static call_unchecked_fn call_unchecked = NULL;
static trap_new_fn trap_new = NULL;
static error_new_fn error_new = NULL;

#define MAX_PARAMS 16
#define FUNC_BYTES 16 /* sizeof(wasmtime_func_t); checked in configure() */

enum { KIND_I32 = 0, KIND_I64 = 1 };

static PyObject *str_pending_error;
static PyObject *str_fail_native;
static PyObject *guest_memory_error; /* abi.engine._guest.GuestMemoryError */

/* ---- GuestState: per instance, what the trampolines need while its code runs -------------- */

typedef struct {
    PyObject_HEAD
    PyObject *guest; /* the GuestBase (pending_error, _fail_native) */
    PyObject *owner; /* passed as the first argument of every host import */
    int hold_gil;    /* keep the GIL across guest calls (cheap guests) */
    double deadline_at; /* CLOCK_MONOTONIC seconds (Python's time.monotonic()) */
} GuestState;

static int GuestState_init(GuestState *self, PyObject *args, PyObject *kwds) {
    PyObject *guest, *owner;
    if (!PyArg_ParseTuple(args, "OO", &guest, &owner))
        return -1;
    Py_INCREF(guest);
    Py_INCREF(owner);
    Py_XSETREF(self->guest, guest);
    Py_XSETREF(self->owner, owner);
    return 0;
}

static int GuestState_traverse(GuestState *self, visitproc visit, void *arg) {
    Py_VISIT(self->guest);
    Py_VISIT(self->owner);
    return 0;
}

static int GuestState_clear(GuestState *self) {
    Py_CLEAR(self->guest);
    Py_CLEAR(self->owner);
    return 0;
}

static void GuestState_dealloc(GuestState *self) {
    PyObject_GC_UnTrack(self);
    GuestState_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef GuestState_members[] = {
    {"hold_gil", T_BOOL, offsetof(GuestState, hold_gil), 0, "keep the GIL across guest calls"},
    {"deadline_at", T_DOUBLE, offsetof(GuestState, deadline_at), 0,
     "time.monotonic() after which the running guest is interrupted"},
    {NULL},
};

static PyTypeObject GuestStateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "abi.engine._native.GuestState",
    .tp_basicsize = sizeof(GuestState),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)GuestState_init,
    .tp_traverse = (traverseproc)GuestState_traverse,
    .tp_clear = (inquiry)GuestState_clear,
    .tp_dealloc = (destructor)GuestState_dealloc,
    .tp_members = GuestState_members,
};

/* The instance whose code runs on this thread (borrowed: the running GuestCall holds it); whether
 * the innermost guest call on this thread holds the GIL; and where that call keeps the thread
 * state when the epoch callback releases the GIL for the rest of it. */
static _Thread_local GuestState *active_state = NULL;
static _Thread_local int active_holds_gil = 0;
static _Thread_local PyThreadState **active_released = NULL;

/* ---- GuestCall: one export, called like a Python function with int arguments -------------- */

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

static PyObject *GuestCall_vectorcall(GuestCall *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames)) {
        PyErr_SetString(PyExc_TypeError, "guest calls take positional arguments only");
        return NULL;
    }
    if (nargs < self->nparams) {
        PyErr_Format(PyExc_TypeError, "guest function takes %zd arguments, %zd given", self->nparams, nargs);
        return NULL;
    }
    raw_value *slots = self->slots;
    for (Py_ssize_t i = 0; i < self->nparams; i++) {
        /* Masking conversions: the ABI's i32 values are unsigned; Python ints of any sign wrap. */
        if (self->kinds[i] == KIND_I32) {
            unsigned long v = PyLong_AsUnsignedLongMask(args[i]);
            if (v == (unsigned long)-1 && PyErr_Occurred())
                return NULL;
            slots[i].low = (uint32_t)v;
        } else {
            unsigned long long v = PyLong_AsUnsignedLongLongMask(args[i]);
            if (v == (unsigned long long)-1 && PyErr_Occurred())
                return NULL;
            slots[i].low = v;
        }
    }
    GuestState *state = self->state;
    GuestState *previous = active_state;
    void *trap = NULL;
    void *error;
    int previous_holds_gil = active_holds_gil;
    PyThreadState **previous_released = active_released;
    Py_INCREF(self); /* the guest may drop its last reference from a host import */
    active_state = state;
    if (state->hold_gil) {
        PyThreadState *released = NULL; /* set by the epoch callback if this call runs past a tick */
        active_holds_gil = 1;
        active_released = &released;
        error = call_unchecked(self->context, self->func, slots, self->nslots, &trap);
        if (released != NULL)
            PyEval_RestoreThread(released);
    } else {
        active_holds_gil = 0;
        Py_BEGIN_ALLOW_THREADS
        error = call_unchecked(self->context, self->func, slots, self->nslots, &trap);
        Py_END_ALLOW_THREADS
    }
    active_state = previous;
    active_holds_gil = previous_holds_gil;
    active_released = previous_released;
    PyObject *result;
    if (error != NULL || trap != NULL) {
        /* Python turns the pointers into wasmtime objects and raises the right GuestTrap. */
        PyObject *error_address = PyLong_FromVoidPtr(error);
        PyObject *trap_address = PyLong_FromVoidPtr(trap);
        if (error_address != NULL && trap_address != NULL) {
            result = PyObject_CallMethodObjArgs(state->guest, str_fail_native, error_address, trap_address, NULL);
            Py_XDECREF(result);
        }
        Py_XDECREF(error_address);
        Py_XDECREF(trap_address);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "guest call failed");
        result = NULL;
    } else if (self->result_kind == KIND_I32) {
        result = PyLong_FromUnsignedLong((uint32_t)slots[0].low);
    } else if (self->result_kind == KIND_I64) {
        result = PyLong_FromLongLong((long long)slots[0].low);
    } else {
        result = Py_NewRef(Py_None);
    }
    Py_DECREF(self);
    return result;
}

static PyObject *GuestCall_call(GuestCall *self, PyObject *args, PyObject *kwds) {
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "guest calls take positional arguments only");
        return NULL;
    }
    return GuestCall_vectorcall(self, &PyTuple_GET_ITEM(args, 0), (size_t)PyTuple_GET_SIZE(args), NULL);
}

/* GuestCall(state, context: int, func: bytes, params: bytes, result: int)
 * params: one byte per parameter, 0 = i32, 1 = i64; result: -1 none, 0 i32, 1 i64. */
static int GuestCall_init(GuestCall *self, PyObject *args, PyObject *kwds) {
    PyObject *state;
    unsigned long long context;
    const char *func, *params;
    Py_ssize_t func_len, params_len;
    int result_kind;
    if (!PyArg_ParseTuple(args, "O!Ky#y#i", &GuestStateType, &state, &context, &func, &func_len, &params,
                          &params_len, &result_kind))
        return -1;
    if (func_len != FUNC_BYTES) {
        PyErr_Format(PyExc_ValueError, "wasmtime_func_t must be %d bytes, got %zd", FUNC_BYTES, func_len);
        return -1;
    }
    if (params_len > MAX_PARAMS) {
        PyErr_Format(PyExc_ValueError, "at most %d parameters are supported", MAX_PARAMS);
        return -1;
    }
    Py_INCREF(state);
    Py_XSETREF(self->state, (GuestState *)state);
    self->context = (void *)(uintptr_t)context;
    memcpy(self->func, func, FUNC_BYTES);
    self->nparams = params_len;
    memcpy(self->kinds, params, params_len);
    self->result_kind = result_kind;
    self->nslots = params_len > 1 ? (size_t)params_len : 1;
    PyMem_Free(self->slots);
    self->slots = PyMem_Calloc(self->nslots, sizeof(raw_value));
    if (self->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->vectorcall = (vectorcallfunc)GuestCall_vectorcall;
    return 0;
}

static int GuestCall_traverse(GuestCall *self, visitproc visit, void *arg) {
    Py_VISIT(self->state);
    return 0;
}

static int GuestCall_clear(GuestCall *self) {
    Py_CLEAR(self->state);
    return 0;
}

static void GuestCall_dealloc(GuestCall *self) {
    PyObject_GC_UnTrack(self);
    GuestCall_clear(self);
    PyMem_Free(self->slots);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject GuestCallType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "abi.engine._native.GuestCall",
    .tp_basicsize = sizeof(GuestCall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(GuestCall, vectorcall),
    .tp_call = (ternaryfunc)GuestCall_call,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)GuestCall_init,
    .tp_traverse = (traverseproc)GuestCall_traverse,
    .tp_clear = (inquiry)GuestCall_clear,
    .tp_dealloc = (destructor)GuestCall_dealloc,
};

/* ---- HostImport: one host function, called by wasmtime through host_trampoline ----------- */

typedef struct {
    PyObject_HEAD
    PyObject *impl;           /* impl(owner, *args) */
    PyObject *name;           /* for trap messages */
    PyObject *on_memory_error; /* int returned on GuestMemoryError, or None: such an error traps */
    Py_ssize_t nparams;
    unsigned char kinds[MAX_PARAMS];
    int result_kind;
} HostImport;

/* HostImport(impl, name: str, params: bytes, result: int, on_memory_error: int | None) */
static int HostImport_init(HostImport *self, PyObject *args, PyObject *kwds) {
    PyObject *impl, *name, *on_memory_error;
    const char *params;
    Py_ssize_t params_len;
    int result_kind;
    if (!PyArg_ParseTuple(args, "OUy#iO", &impl, &name, &params, &params_len, &result_kind, &on_memory_error))
        return -1;
    if (params_len > MAX_PARAMS) {
        PyErr_Format(PyExc_ValueError, "at most %d parameters are supported", MAX_PARAMS);
        return -1;
    }
    Py_INCREF(impl);
    Py_INCREF(name);
    Py_INCREF(on_memory_error);
    Py_XSETREF(self->impl, impl);
    Py_XSETREF(self->name, name);
    Py_XSETREF(self->on_memory_error, on_memory_error);
    self->nparams = params_len;
    memcpy(self->kinds, params, params_len);
    self->result_kind = result_kind;
    return 0;
}

static int HostImport_traverse(HostImport *self, visitproc visit, void *arg) {
    Py_VISIT(self->impl);
    Py_VISIT(self->name);
    Py_VISIT(self->on_memory_error);
    return 0;
}

static int HostImport_clear(HostImport *self) {
    Py_CLEAR(self->impl);
    Py_CLEAR(self->name);
    Py_CLEAR(self->on_memory_error);
    return 0;
}

static void HostImport_dealloc(HostImport *self) {
    PyObject_GC_UnTrack(self);
    HostImport_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject HostImportType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "abi.engine._native.HostImport",
    .tp_basicsize = sizeof(HostImport),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)HostImport_init,
    .tp_traverse = (traverseproc)HostImport_traverse,
    .tp_clear = (inquiry)HostImport_clear,
    .tp_dealloc = (destructor)HostImport_dealloc,
};

/* Any exception becomes a trap; the exception itself is kept on the guest and re-raised by
 * _fail_native after the guest call returns (so the caller sees the real cause). */
static void *trap_for_exception(HostImport *host, GuestState *state) {
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL && value != NULL)
        PyException_SetTraceback(value, traceback);
    PyObject *message = PyUnicode_FromFormat("host function %U failed: %S", host->name,
                                             value ? value : Py_None);
    if (state != NULL && value != NULL && PyObject_SetAttr(state->guest, str_pending_error, value) < 0)
        PyErr_Clear();
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
    Py_ssize_t length = 0;
    const char *text = message ? PyUnicode_AsUTF8AndSize(message, &length) : NULL;
    if (text == NULL) {
        PyErr_Clear();
        text = "host function failed";
        length = (Py_ssize_t)strlen(text);
    }
    void *trap = trap_new(text, (size_t)length);
    Py_XDECREF(message);
    return trap;
}

static void *host_trampoline(void *env, void *caller, raw_value *args, size_t nargs) {
    HostImport *host = (HostImport *)env;
    PyGILState_STATE gil = PyGILState_Ensure();
    GuestState *state = active_state;
    void *trap = NULL;
    PyObject *argv[MAX_PARAMS + 1];
    PyObject *result = NULL;
    Py_ssize_t made = 0;
    if (state == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "host function called with no guest running on this thread");
        trap = trap_for_exception(host, NULL);
        goto done;
    }
    argv[0] = state->owner;
    for (; made < host->nparams; made++) {
        PyObject *value = host->kinds[made] == KIND_I32 ? PyLong_FromUnsignedLong((uint32_t)args[made].low)
                                                        : PyLong_FromLongLong((long long)args[made].low);
        if (value == NULL) {
            trap = trap_for_exception(host, state);
            goto done;
        }
        argv[made + 1] = value;
    }
    result = PyObject_Vectorcall(host->impl, argv, (size_t)(host->nparams + 1), NULL);
    if (result == NULL && host->on_memory_error != Py_None && PyErr_ExceptionMatches(guest_memory_error)) {
        PyErr_Clear();
        result = Py_NewRef(host->on_memory_error);
    }
    if (result == NULL) {
        trap = trap_for_exception(host, state);
        goto done;
    }
    if (host->result_kind == KIND_I32) {
        unsigned long v = PyLong_AsUnsignedLongMask(result);
        if (v == (unsigned long)-1 && PyErr_Occurred()) {
            trap = trap_for_exception(host, state);
            goto done;
        }
        args[0].low = (uint32_t)v;
    } else if (host->result_kind == KIND_I64) {
        unsigned long long v = PyLong_AsUnsignedLongLongMask(result);
        if (v == (unsigned long long)-1 && PyErr_Occurred()) {
            trap = trap_for_exception(host, state);
            goto done;
        }
        args[0].low = v;
    }
done:
    Py_XDECREF(result);
    for (Py_ssize_t i = 0; i < made; i++)
        Py_DECREF(argv[i + 1]);
    PyGILState_Release(gil);
    return trap;
}

/* ---- epoch callback: deadlines without Python ----------------------------------------------- */

/* wasmtime_store_epoch_deadline_callback's callback, run at every epoch tick while a guest of the
 * store runs (its `data` is the store's GuestState). Past the deadline it ends the guest. A call
 * that kept the GIL (a function believed cheap) and is still running at a tick is not cheap: it
 * gives the GIL up for the rest of the call (host imports take it back as usual, the call takes
 * it back when it returns), so it cannot stall the event loop or other guests. A guest that does
 * not keep the GIL runs this without touching it, so two of them run in parallel undisturbed. */
static void *epoch_callback(void *context, void *data, uint64_t *delta, uint8_t *kind) {
    GuestState *state = (GuestState *)data;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if ((double)now.tv_sec + (double)now.tv_nsec / 1e9 >= state->deadline_at)
        return error_new("wasm trap: interrupt (deadline exceeded)");
    if (active_holds_gil && active_released != NULL && *active_released == NULL) {
        *active_released = PyEval_SaveThread();
        active_holds_gil = 0;
    }
    *delta = 1;
    *kind = 0; /* WASMTIME_UPDATE_DEADLINE_CONTINUE */
    return NULL;
}

/* ---- module ------------------------------------------------------------------------------ */

static PyObject *configure(PyObject *module, PyObject *args) {
    unsigned long long call_address, trap_new_address, error_new_address;
    Py_ssize_t func_size, raw_size;
    PyObject *memory_error;
    if (!PyArg_ParseTuple(args, "KKKnnO", &call_address, &trap_new_address, &error_new_address, &func_size,
                          &raw_size, &memory_error))
        return NULL;
    if (func_size != FUNC_BYTES || raw_size != (Py_ssize_t)sizeof(raw_value)) {
        PyErr_Format(PyExc_ImportError, "wasmtime layout changed: func %zd bytes, raw value %zd bytes", func_size,
                     raw_size);
        return NULL;
    }
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
     "configure(call_unchecked, trap_new, error_new, func_size, raw_size, GuestMemoryError): addresses of "
     "the wasmtime C functions to use, and the layouts they expect"},
    {"trampoline_address", trampoline_address, METH_NOARGS,
     "the C callback to register for every host import (its env is the HostImport object)"},
    {"epoch_callback_address", epoch_callback_address, METH_NOARGS,
     "the C epoch-deadline callback to register for every store (its data is the GuestState)"},
    {NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "abi.engine._native", "Native guest-call and host-import crossings.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&GuestStateType) < 0 || PyType_Ready(&GuestCallType) < 0 || PyType_Ready(&HostImportType) < 0)
        return NULL;
    str_pending_error = PyUnicode_InternFromString("pending_error");
    str_fail_native = PyUnicode_InternFromString("_fail_native");
    if (str_pending_error == NULL || str_fail_native == NULL)
        return NULL;
    PyObject *module = PyModule_Create(&native_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "GuestState", (PyObject *)&GuestStateType) < 0 ||
        PyModule_AddObjectRef(module, "GuestCall", (PyObject *)&GuestCallType) < 0 ||
        PyModule_AddObjectRef(module, "HostImport", (PyObject *)&HostImportType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
