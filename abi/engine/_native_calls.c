/*
 * The crossings: GuestState (one per instance), GuestCall (a guest export called from Python),
 * HostImport and host_trampoline (a host import called from wasm, with its fast path first when it
 * has one: _native_fast.c), and the epoch callback that enforces deadlines.
 */
#include "_native.h"

#include <structmember.h>
#include <string.h>
#include <time.h>

static PyObject *str_pending_error;
static PyObject *str_fail_native;

int calls_init(void) {
    str_pending_error = PyUnicode_InternFromString("pending_error");
    str_fail_native = PyUnicode_InternFromString("_fail_native");
    return str_pending_error != NULL && str_fail_native != NULL ? 0 : -1;
}

/* ---- GuestState: per instance, what the trampolines need while its code runs -------------- */

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

/* set_memory(context: int, memory: bytes): the store context and wasmtime_memory_t of the export. */
static PyObject *GuestState_set_memory(GuestState *self, PyObject *args) {
    unsigned long long context;
    const char *memory;
    Py_ssize_t memory_len;
    if (!PyArg_ParseTuple(args, "Ky#", &context, &memory, &memory_len))
        return NULL;
    if (memory_len != MEMORY_BYTES) {
        PyErr_Format(PyExc_ValueError, "wasmtime_memory_t must be %d bytes, got %zd", MEMORY_BYTES, memory_len);
        return NULL;
    }
    self->memory_context = (void *)(uintptr_t)context;
    memcpy(self->memory, memory, MEMORY_BYTES);
    self->has_memory = context != 0;
    Py_RETURN_NONE;
}

static PyMethodDef GuestState_methods[] = {
    {"set_memory", (PyCFunction)GuestState_set_memory, METH_VARARGS,
     "set_memory(context, memory): the instance's exported memory, read by the fast host imports"},
    {NULL},
};

static PyMemberDef GuestState_members[] = {
    {"hold_gil", T_BOOL, offsetof(GuestState, hold_gil), 0, "keep the GIL across guest calls"},
    {"deadline_at", T_DOUBLE, offsetof(GuestState, deadline_at), 0,
     "time.monotonic() after which the running guest is interrupted"},
    {NULL},
};

PyTypeObject GuestStateType = {
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
    .tp_methods = GuestState_methods,
};

/* The instance whose code runs on this thread (borrowed: the running GuestCall holds it); whether
 * the innermost guest call on this thread holds the GIL; and where that call keeps the thread
 * state when the epoch callback releases the GIL for the rest of it. */
static _Thread_local GuestState *active_state = NULL;
static _Thread_local int active_holds_gil = 0;
static _Thread_local PyThreadState **active_released = NULL;

/* ---- GuestCall: one export, called like a Python function with int arguments -------------- */

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

PyTypeObject GuestCallType = {
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

/* HostImport(impl, name: str, params: bytes, result: int, on_memory_error: int | None, fast: int = 0)
 * A fast path needs the import's ABI signature: its i32 parameters (fast_path_params) and an i32 result. */
static int HostImport_init(HostImport *self, PyObject *args, PyObject *kwds) {
    PyObject *impl, *name, *on_memory_error;
    const char *params;
    Py_ssize_t params_len;
    int result_kind, fast = FAST_NONE;
    if (!PyArg_ParseTuple(args, "OUy#iO|i", &impl, &name, &params, &params_len, &result_kind, &on_memory_error,
                          &fast))
        return -1;
    if (fast < FAST_NONE || fast >= FAST_COUNT ||
        (fast != FAST_NONE && (params_len != fast_path_params(fast) ||
                               memchr(params, KIND_I64, (size_t)params_len) != NULL || result_kind != KIND_I32))) {
        PyErr_Format(PyExc_ValueError, "fast path %d does not fit this import", fast);
        return -1;
    }
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
    self->fast = fast;
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

PyTypeObject HostImportType = {
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

void *host_trampoline(void *env, void *caller, raw_value *args, size_t nargs) {
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
    if (host->fast != FAST_NONE) {
        int verdict = run_fast_path(host->fast, state, args);
        if (verdict >= 0) {
            args[0].low = (uint32_t)verdict;
            goto done;
        }
        if (verdict == FAST_ERROR)
            goto failed;
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
failed:
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
void *epoch_callback(void *context, void *data, uint64_t *delta, uint8_t *kind) {
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
