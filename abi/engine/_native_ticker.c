/*
 * The epoch ticker: one native thread advancing the engine epoch every period (start_ticker),
 * joined when it is stopped.
 */
#include "_native.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

/* wasmtime_engine_increment_epoch(engine) */
typedef void (*increment_epoch_fn)(void *);

/* The thread sleeps until absolute CLOCK_MONOTONIC deadlines (no drift) on a condition variable,
 * so stop() wakes it at once; it never touches Python. It is not GC-tracked: the engine object it
 * keeps alive cannot be collected before the thread is joined. */
typedef struct {
    PyObject_HEAD
    increment_epoch_fn increment;
    void *engine;
    long long period_ns;
    PyObject *keep;       /* the wasmtime.Engine whose pointer the thread uses */
    pthread_t thread;
    int started;          /* a thread was created and not yet joined (guarded by join_lock) */
    pid_t pid;            /* the process that created it: a forked child has no such thread */
    atomic_int stopping;
    pthread_mutex_t lock; /* with wake: the thread's sleep */
    pthread_cond_t wake;
    pthread_mutex_t join_lock; /* one joiner at a time; a second stop() waits for the first */
} Ticker;

static void *ticker_main(void *arg) {
    Ticker *self = (Ticker *)arg;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    pthread_mutex_lock(&self->lock);
    while (!atomic_load(&self->stopping)) {
        long long nsec = next.tv_nsec + self->period_ns;
        next.tv_sec += (time_t)(nsec / 1000000000LL);
        next.tv_nsec = (long)(nsec % 1000000000LL);
        int waited = 0;
        while (!atomic_load(&self->stopping) && waited != ETIMEDOUT)
            waited = pthread_cond_timedwait(&self->wake, &self->lock, &next);
        if (atomic_load(&self->stopping))
            break;
        self->increment(self->engine);
        /* Far behind (the machine was suspended, or the thread starved): restart from now, not a burst. */
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - next.tv_sec) * 1000000000LL + (now.tv_nsec - next.tv_nsec) > self->period_ns)
            next = now;
    }
    pthread_mutex_unlock(&self->lock);
    return NULL;
}

/* Joins the thread (at once: the stop flag wakes it). Called with or without the GIL. */
static void ticker_join(Ticker *self) {
    if (self->pid != getpid()) { /* a forked child: the thread, and whatever lock it held, stayed behind */
        self->started = 0;
        return;
    }
    pthread_mutex_lock(&self->join_lock);
    if (self->started) {
        pthread_mutex_lock(&self->lock);
        atomic_store(&self->stopping, 1);
        pthread_cond_signal(&self->wake);
        pthread_mutex_unlock(&self->lock);
        pthread_join(self->thread, NULL);
        self->started = 0;
    }
    pthread_mutex_unlock(&self->join_lock);
}

static PyObject *Ticker_stop(Ticker *self, PyObject *unused) {
    Py_BEGIN_ALLOW_THREADS
    ticker_join(self);
    Py_END_ALLOW_THREADS
    Py_CLEAR(self->keep);
    Py_RETURN_NONE;
}

static void Ticker_dealloc(Ticker *self) {
    /* The thread never takes the GIL, so joining while holding it cannot deadlock. */
    ticker_join(self);
    if (self->pid == getpid()) {
        pthread_cond_destroy(&self->wake);
        pthread_mutex_destroy(&self->lock);
        pthread_mutex_destroy(&self->join_lock);
    }
    Py_CLEAR(self->keep);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Ticker_running(Ticker *self, void *unused) {
    return PyBool_FromLong(self->started);
}

static PyMethodDef Ticker_methods[] = {
    {"stop", (PyCFunction)Ticker_stop, METH_NOARGS,
     "stop the thread and join it (prompt: the thread is woken); idempotent"},
    {NULL},
};

static PyGetSetDef Ticker_getset[] = {
    {"running", (getter)Ticker_running, NULL, "whether the thread runs", NULL},
    {NULL},
};

PyTypeObject TickerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "abi.engine._native.Ticker",
    .tp_basicsize = sizeof(Ticker),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)Ticker_dealloc,
    .tp_methods = Ticker_methods,
    .tp_getset = Ticker_getset,
};

/* start_ticker(increment_epoch_address, engine_ptr, period_ns, keep) -> Ticker */
PyObject *start_ticker(PyObject *module, PyObject *args) {
    unsigned long long increment_address, engine_address;
    long long period_ns;
    PyObject *keep;
    if (!PyArg_ParseTuple(args, "KKLO", &increment_address, &engine_address, &period_ns, &keep))
        return NULL;
    if (increment_address == 0 || engine_address == 0 || period_ns <= 0) {
        PyErr_SetString(PyExc_ValueError, "start_ticker needs a function, an engine and a positive period");
        return NULL;
    }
    Ticker *self = PyObject_New(Ticker, &TickerType);
    if (self == NULL)
        return NULL;
    self->increment = (increment_epoch_fn)(uintptr_t)increment_address;
    self->engine = (void *)(uintptr_t)engine_address;
    self->period_ns = period_ns;
    self->keep = Py_NewRef(keep);
    self->started = 0;
    self->pid = getpid();
    atomic_init(&self->stopping, 0);
    pthread_condattr_t attributes;
    pthread_condattr_init(&attributes);
    pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
    pthread_cond_init(&self->wake, &attributes);
    pthread_condattr_destroy(&attributes);
    pthread_mutex_init(&self->lock, NULL);
    pthread_mutex_init(&self->join_lock, NULL);
    /* Signals stay with Python's threads: the new thread starts with all of them blocked. */
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    int failed = pthread_create(&self->thread, NULL, ticker_main, self);
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (failed) {
        Py_DECREF(self);
        errno = failed;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    self->started = 1;
    return (PyObject *)self;
}
