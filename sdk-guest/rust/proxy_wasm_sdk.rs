//! proxy_wasm_sdk - a single-file Rust SDK for proxy-wasm 0.2.1 guests, plus the
//! Layotto FaaS extensions (`proxy_get_state`, `proxy_invoke_service`, the
//! `proxy_get_id` export) and this host's runtime imports (state with ETags,
//! pub/sub, locks, sequencer, configuration; the Layotto runtime API as
//! foreign functions `runtime.v1.<Method>`), all documented in abi/IMPORTS.md.
//! No dependencies besides `std`.
//!
//! Build it with Debian's rustc (no cargo, no crates.io) as an rlib, then link a
//! function against it as a cdylib:
//!
//! ```text
//! /usr/bin/rustc --crate-type rlib --crate-name proxy_wasm_sdk --edition 2021 \
//!     --target wasm32-unknown-unknown -O -o libproxy_wasm_sdk.rlib sdk-guest/rust/proxy_wasm_sdk.rs
//! /usr/bin/rustc --crate-type cdylib --edition 2021 --target wasm32-unknown-unknown \
//!     -C opt-level=s -C panic=abort -C lto -C strip=symbols \
//!     --extern proxy_wasm_sdk=libproxy_wasm_sdk.rlib -o fn.wasm fn.rs
//! ```
//! (`python scripts/build_rust_guests.py` does exactly this for the examples.)
//!
//! A function crate looks like this:
//!
//! ```ignore
//! use proxy_wasm_sdk::{self as sdk, Action, BufferType};
//!
//! sdk::export_abi!();          // proxy_abi_version_0_2_1 + proxy_on_memory_allocate
//! sdk::function_id!("my_id");  // proxy_get_id (Layotto routing id)
//!
//! #[no_mangle]
//! pub extern "C" fn proxy_on_request_body(_ctx: u32, _size: usize, _eos: u32) -> Action {
//!     let body = sdk::get_buffer(BufferType::HttpRequestBody).unwrap_or_default();
//!     let _ = sdk::append_buffer(BufferType::HttpResponseBody, &body);
//!     Action::Continue
//! }
//! ```
//!
//! Callbacks (`proxy_on_*`) are ordinary `#[no_mangle] pub extern "C" fn`s that
//! the function crate defines itself, with exactly the wasm signatures of the
//! spec: every parameter is `u32`/`usize` (spec "bool" parameters are `u32`,
//! so that a host passing 2 cannot cause undefined behaviour), `proxy_on_done`,
//! `proxy_on_vm_start` and `proxy_on_configure` return `bool`, the stream
//! callbacks return [`Action`]. Callbacks that are not defined are simply not
//! exported, which the ABI allows.
//!
//! # Memory ownership
//!
//! Whenever the host returns bytes (a buffer, a header value, a state value, an
//! invocation result...), it calls the module's exported
//! `proxy_on_memory_allocate(size)` (see [`export_allocator!`]), copies the
//! bytes into that allocation and writes the pointer and the length back. That
//! allocation then belongs to the guest. The safe wrappers below take it over
//! as a `Vec<u8>` without copying (see [`allocate`] for why that is sound), so
//! it is released when the `Vec` is dropped - also when the host returned the
//! pointer together with an error status. Nothing in this SDK hands guest
//! memory to the host for keeping: every pointer passed *to* the host is only
//! borrowed for the duration of the call.

#![allow(clippy::missing_safety_doc)]

use std::alloc::{alloc, Layout};
use std::ptr;

// --------------------------------------------------------------------------
// Codes and enums (values fixed by the proxy-wasm 0.2.1 spec)
// --------------------------------------------------------------------------

/// A `proxy_status_t` returned by a host function. A newtype rather than an
/// enum, because a host may return a code this SDK does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Status(pub u32);

impl Status {
    pub const OK: Status = Status(0);
    pub const NOT_FOUND: Status = Status(1);
    pub const BAD_ARGUMENT: Status = Status(2);
    pub const SERIALIZATION_FAILURE: Status = Status(3);
    pub const PARSE_FAILURE: Status = Status(4);
    pub const INVALID_MEMORY_ACCESS: Status = Status(6);
    pub const EMPTY: Status = Status(7);
    pub const CAS_MISMATCH: Status = Status(8);
    pub const INTERNAL_FAILURE: Status = Status(10);
    pub const UNIMPLEMENTED: Status = Status(12);

    /// The numeric code.
    pub fn code(self) -> u32 {
        self.0
    }

    /// `Ok(())` for OK, `Err(self)` for anything else.
    pub fn check(self) -> Result<(), Status> {
        if self == Status::OK {
            Ok(())
        } else {
            Err(self)
        }
    }
}

/// What a stream callback tells the host to do next (`proxy_action_t`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Continue = 0,
    Pause = 1,
}

/// `proxy_buffer_type_t`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferType {
    HttpRequestBody = 0,
    HttpResponseBody = 1,
    DownstreamData = 2,
    UpstreamData = 3,
    HttpCallResponseBody = 4,
    GrpcCallMessage = 5,
    VmConfiguration = 6,
    PluginConfiguration = 7,
    /// Spec: foreign-function arguments. Layotto also uses buffer 8 to receive
    /// the function id from `proxy_get_id` (see [`function_id!`]).
    CallData = 8,
}

/// `proxy_map_type_t`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapType {
    HttpRequestHeaders = 0,
    HttpRequestTrailers = 1,
    HttpResponseHeaders = 2,
    HttpResponseTrailers = 3,
    GrpcCallInitialMetadata = 4,
    GrpcCallTrailingMetadata = 5,
    HttpCallResponseHeaders = 6,
    HttpCallResponseTrailers = 7,
}

/// `proxy_log_level_t`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

/// `proxy_stream_type_t`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamType {
    HttpRequest = 0,
    HttpResponse = 1,
    Downstream = 2,
    Upstream = 3,
}

/// `proxy_metric_type_t`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

/// `proxy_peer_type_t` (argument of the connection-close callbacks).
pub mod peer {
    pub const UNKNOWN: u32 = 0;
    pub const LOCAL: u32 = 1;
    pub const REMOTE: u32 = 2;
}

/// `start` for [`raw::proxy_set_buffer_bytes`] meaning "append": any start at
/// or past the end of the buffer appends, and the largest `usize` always is.
pub const APPEND: usize = usize::MAX;

/// `grpc_status` argument of `proxy_send_local_response` meaning "none".
pub const NO_GRPC_STATUS: u32 = u32::MAX;

// --------------------------------------------------------------------------
// Host imports (module "env"), exactly as the spec declares them
// --------------------------------------------------------------------------

/// The raw host functions. Every `*mut *mut u8` / `*mut usize` pair is an
/// out-parameter that receives an allocation made through
/// `proxy_on_memory_allocate`, owned by the caller afterwards (see the crate
/// docs). Only the functions a module actually calls end up as imports of
/// its `.wasm`, so declaring the whole ABI costs nothing.
pub mod raw {
    #[link(wasm_import_module = "env")]
    extern "C" {
        // Context lifecycle
        pub fn proxy_done() -> u32;
        pub fn proxy_set_effective_context(context_id: u32) -> u32;

        // Logging
        pub fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
        pub fn proxy_get_log_level(return_log_level: *mut u32) -> u32;

        // Clock and timers
        pub fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
        pub fn proxy_set_tick_period_milliseconds(tick_period: u32) -> u32;

        // Buffers
        pub fn proxy_set_buffer_bytes(
            buffer_type: u32,
            start: usize,
            size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_get_buffer_bytes(
            buffer_type: u32,
            start: usize,
            max_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_get_buffer_status(
            buffer_type: u32,
            return_buffer_size: *mut usize,
            return_ignored: *mut u32,
        ) -> u32;

        // HTTP fields (header maps)
        pub fn proxy_get_header_map_size(map_type: u32, return_serialized_pairs_size: *mut usize) -> u32;
        pub fn proxy_get_header_map_pairs(
            map_type: u32,
            return_serialized_pairs_data: *mut *mut u8,
            return_serialized_pairs_size: *mut usize,
        ) -> u32;
        pub fn proxy_set_header_map_pairs(
            map_type: u32,
            serialized_pairs_data: *const u8,
            serialized_pairs_size: usize,
        ) -> u32;
        pub fn proxy_get_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_add_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_replace_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;

        // Common stream operations
        pub fn proxy_continue_stream(stream_type: u32) -> u32;
        pub fn proxy_close_stream(stream_type: u32) -> u32;
        pub fn proxy_get_status(
            return_status_code: *mut u32,
            return_status_message_data: *mut *mut u8,
            return_status_message_size: *mut usize,
        ) -> u32;

        // HTTP
        pub fn proxy_send_local_response(
            status_code: u32,
            status_code_details_data: *const u8,
            status_code_details_size: usize,
            body_data: *const u8,
            body_size: usize,
            serialized_headers_data: *const u8,
            serialized_headers_size: usize,
            grpc_status: u32,
        ) -> u32;

        // HTTP calls
        pub fn proxy_http_call(
            upstream_name_data: *const u8,
            upstream_name_size: usize,
            serialized_headers_data: *const u8,
            serialized_headers_size: usize,
            body_data: *const u8,
            body_size: usize,
            serialized_trailers_data: *const u8,
            serialized_trailers_size: usize,
            timeout: u32,
            return_call_id: *mut u32,
        ) -> u32;

        // Shared key-value store
        pub fn proxy_set_shared_data(
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
            cas: u32,
        ) -> u32;
        pub fn proxy_get_shared_data(
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
            return_cas: *mut u32,
        ) -> u32;

        // Metrics (the only i64 values of the ABI)
        pub fn proxy_define_metric(
            metric_type: u32,
            name_data: *const u8,
            name_size: usize,
            return_metric_id: *mut u32,
        ) -> u32;
        pub fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
        pub fn proxy_increment_metric(metric_id: u32, delta: i64) -> u32;
        pub fn proxy_get_metric(metric_id: u32, return_value: *mut u64) -> u32;

        // Properties
        pub fn proxy_get_property(
            path_data: *const u8,
            path_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_set_property(
            path_data: *const u8,
            path_size: usize,
            value_data: *const u8,
            value_size: usize,
        ) -> u32;

        // Foreign functions
        pub fn proxy_call_foreign_function(
            name_data: *const u8,
            name_size: usize,
            arguments_data: *const u8,
            arguments_size: usize,
            return_results_data: *mut *mut u8,
            return_results_size: *mut usize,
        ) -> u32;

        // Layotto extensions: results are allocated in guest memory by the host.
        pub fn proxy_get_state(
            store_name_data: *const u8,
            store_name_size: usize,
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        pub fn proxy_invoke_service(
            id_data: *const u8,
            id_size: usize,
            method_data: *const u8,
            method_size: usize,
            param_data: *const u8,
            param_size: usize,
            return_result_data: *mut *mut u8,
            return_result_size: *mut usize,
        ) -> u32;

        // Runtime imports of this host (abi/IMPORTS.md). An empty etag means
        // "no ETag" (last write wins); bytes come back as with proxy_get_state.
        pub fn proxy_get_state_with_etag(
            store_name_data: *const u8,
            store_name_size: usize,
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
            return_etag_data: *mut *mut u8,
            return_etag_size: *mut usize,
        ) -> u32;
        pub fn proxy_set_state(
            store_name_data: *const u8,
            store_name_size: usize,
            key_data: *const u8,
            key_size: usize,
            value_data: *const u8,
            value_size: usize,
            etag_data: *const u8,
            etag_size: usize,
        ) -> u32;
        pub fn proxy_delete_state(
            store_name_data: *const u8,
            store_name_size: usize,
            key_data: *const u8,
            key_size: usize,
            etag_data: *const u8,
            etag_size: usize,
        ) -> u32;
        pub fn proxy_publish_event(
            pubsub_name_data: *const u8,
            pubsub_name_size: usize,
            topic_data: *const u8,
            topic_size: usize,
            data: *const u8,
            data_size: usize,
            content_type_data: *const u8,
            content_type_size: usize,
        ) -> u32;
        pub fn proxy_try_lock(
            store_name_data: *const u8,
            store_name_size: usize,
            resource_id_data: *const u8,
            resource_id_size: usize,
            lock_owner_data: *const u8,
            lock_owner_size: usize,
            expire_seconds: i32,
            return_acquired: *mut u32,
        ) -> u32;
        pub fn proxy_unlock(
            store_name_data: *const u8,
            store_name_size: usize,
            resource_id_data: *const u8,
            resource_id_size: usize,
            lock_owner_data: *const u8,
            lock_owner_size: usize,
            return_result: *mut u32,
        ) -> u32;
        pub fn proxy_get_next_id(
            store_name_data: *const u8,
            store_name_size: usize,
            key_data: *const u8,
            key_size: usize,
            return_id: *mut u64,
        ) -> u32;
        /// Not ABI 0.1.0's two-argument `proxy_get_configuration` (the plugin
        /// configuration, buffer 7 since 0.2.0): same name, six arguments.
        pub fn proxy_get_configuration(
            store_name_data: *const u8,
            store_name_size: usize,
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
    }
}

// --------------------------------------------------------------------------
// Memory: the allocator the host calls, and taking its allocations back
// --------------------------------------------------------------------------

/// The body of the exported `proxy_on_memory_allocate` (see
/// [`export_allocator!`]): `size` bytes from the global allocator, align 1.
///
/// A 0-byte request still gets a unique non-null pointer (1 byte), because
/// hosts read a null pointer as allocation failure; a real allocation failure
/// returns null instead of aborting, so the host can report it.
///
/// Ownership: the memory is leaked to the host, which fills it and passes the
/// pointer and the length back to the guest through an out-parameter; from then
/// on the guest owns it. [`take_host_bytes`] turns it into a `Vec<u8>`. The
/// layout is exactly the one `Vec<u8>` uses for capacity `max(size, 1)`, which
/// is what makes that conversion sound.
pub fn allocate(size: usize) -> *mut u8 {
    match Layout::from_size_align(size.max(1), 1) {
        // SAFETY: the layout has a non-zero size.
        Ok(layout) => unsafe { alloc(layout) },
        Err(_) => ptr::null_mut(),
    }
}

/// Takes ownership of `len` bytes at `ptr` that the host allocated through
/// [`allocate`] (i.e. the module's `proxy_on_memory_allocate`) and filled.
/// A null `ptr` gives an empty `Vec`.
///
/// # Safety
/// `ptr` must be null or come from [`allocate`] called with exactly `len`,
/// it must not be used afterwards, and `len` bytes must be initialized. This
/// holds for the pointer/length pairs a conforming host writes back.
pub unsafe fn take_host_bytes(ptr: *mut u8, len: usize) -> Vec<u8> {
    if ptr.is_null() {
        Vec::new()
    } else {
        Vec::from_raw_parts(ptr, len, len.max(1))
    }
}

/// Defines the export `proxy_on_memory_allocate` (the host allocates every
/// buffer it returns through it; see [`allocate`] for the ownership rule).
/// Invoke it once at the top level of the function crate. (It is a macro and
/// not a `#[no_mangle]` function of this crate so that the export is
/// certainly defined in the final cdylib, whatever the linker keeps from
/// upstream rlibs.)
#[macro_export]
macro_rules! export_allocator {
    () => {
        #[no_mangle]
        pub extern "C" fn proxy_on_memory_allocate(memory_size: usize) -> *mut u8 {
            $crate::allocate(memory_size)
        }
    };
}

/// Defines the exports every module needs: the ABI marker
/// `proxy_abi_version_0_2_1` (never called) and `proxy_on_memory_allocate`.
#[macro_export]
macro_rules! export_abi {
    () => {
        #[no_mangle]
        pub extern "C" fn proxy_abi_version_0_2_1() {}
        $crate::export_allocator!();
    };
}

/// Defines the Layotto export `proxy_get_id()`, which reports the function id
/// (the value of the HTTP header `id` that routes requests here) through the
/// call-data buffer: `proxy_set_buffer_bytes(8, 0, len, id, len)`. Also
/// defines `pub const FUNCTION_ID: &str`. Use it once, at the top level:
/// `proxy_wasm_sdk::function_id!("id_1");`
#[macro_export]
macro_rules! function_id {
    ($id:literal) => {
        pub const FUNCTION_ID: &str = $id;
        #[no_mangle]
        pub extern "C" fn proxy_get_id() {
            let _ = $crate::set_function_id(FUNCTION_ID);
        }
    };
}

/// What `proxy_get_id` does: writes `id` into the call-data buffer (type 8).
pub fn set_function_id(id: &str) -> Result<(), Status> {
    let len = id.len();
    // SAFETY: `id` is borrowed for the duration of the call.
    Status(unsafe { raw::proxy_set_buffer_bytes(BufferType::CallData as u32, 0, len, id.as_ptr(), len) }).check()
}

/// Calls a host function that returns bytes through a (ptr, len) out-pair
/// and takes ownership of them - also on error, so nothing leaks.
fn host_bytes(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Result<Vec<u8>, Status> {
    let mut data: *mut u8 = ptr::null_mut();
    let mut size: usize = 0;
    let status = Status(call(&mut data, &mut size));
    // SAFETY: the host wrote (data, size) from an allocation made through
    // proxy_on_memory_allocate, or left them null/0.
    let bytes = unsafe { take_host_bytes(data, size) };
    status.check().map(|()| bytes)
}

/// Like [`host_bytes`] for a call that returns two byte strings (e.g. a value
/// and its ETag); both are taken over, also on error.
fn host_bytes_pair(
    call: impl FnOnce(*mut *mut u8, *mut usize, *mut *mut u8, *mut usize) -> u32,
) -> Result<(Vec<u8>, Vec<u8>), Status> {
    let (mut first, mut first_size): (*mut u8, usize) = (ptr::null_mut(), 0);
    let (mut second, mut second_size): (*mut u8, usize) = (ptr::null_mut(), 0);
    let status = Status(call(&mut first, &mut first_size, &mut second, &mut second_size));
    // SAFETY: as in host_bytes, for each pair.
    let first = unsafe { take_host_bytes(first, first_size) };
    let second = unsafe { take_host_bytes(second, second_size) };
    status.check().map(|()| (first, second))
}

// --------------------------------------------------------------------------
// Logging, time, timers, contexts
// --------------------------------------------------------------------------

/// Logs `message` at `level`.
pub fn log(level: LogLevel, message: &str) -> Result<(), Status> {
    log_bytes(level, message.as_bytes())
}

/// Logs raw bytes (need not be UTF-8) at `level`.
pub fn log_bytes(level: LogLevel, message: &[u8]) -> Result<(), Status> {
    Status(unsafe { raw::proxy_log(level as u32, message.as_ptr(), message.len()) }).check()
}

/// The host's current log level, as a raw `proxy_log_level_t`.
pub fn log_level() -> Result<u32, Status> {
    let mut level = 0u32;
    Status(unsafe { raw::proxy_get_log_level(&mut level) }).check()?;
    Ok(level)
}

/// Unix-epoch nanoseconds.
pub fn now_nanos() -> Result<u64, Status> {
    let mut now = 0u64;
    Status(unsafe { raw::proxy_get_current_time_nanoseconds(&mut now) }).check()?;
    Ok(now)
}

/// Calls `proxy_on_tick` every `millis` ms (0 disables the timer).
pub fn set_tick_period_millis(millis: u32) -> Result<(), Status> {
    Status(unsafe { raw::proxy_set_tick_period_milliseconds(millis) }).check()
}

pub fn set_effective_context(context_id: u32) -> Result<(), Status> {
    Status(unsafe { raw::proxy_set_effective_context(context_id) }).check()
}

/// Finishes a context after `proxy_on_done` returned false.
pub fn done() -> Result<(), Status> {
    Status(unsafe { raw::proxy_done() }).check()
}

// --------------------------------------------------------------------------
// Buffers (bodies, configuration, call data)
// --------------------------------------------------------------------------

/// Current size of a buffer.
pub fn buffer_size(buffer: BufferType) -> Result<usize, Status> {
    let mut size = 0usize;
    let mut ignored = 0u32;
    Status(unsafe { raw::proxy_get_buffer_status(buffer as u32, &mut size, &mut ignored) }).check()?;
    Ok(size)
}

/// Up to `max_size` bytes of a buffer, from `start`.
pub fn get_buffer_bytes(buffer: BufferType, start: usize, max_size: usize) -> Result<Vec<u8>, Status> {
    host_bytes(|data, size| unsafe { raw::proxy_get_buffer_bytes(buffer as u32, start, max_size, data, size) })
}

/// The whole buffer (empty when the buffer is empty).
pub fn get_buffer(buffer: BufferType) -> Result<Vec<u8>, Status> {
    let total = buffer_size(buffer)?;
    if total == 0 {
        return Ok(Vec::new());
    }
    get_buffer_bytes(buffer, 0, total)
}

/// Replaces `size` bytes at `start` with `value` (the raw spec operation:
/// start 0 + size 0 prepends, start >= length appends).
pub fn set_buffer_bytes(buffer: BufferType, start: usize, size: usize, value: &[u8]) -> Result<(), Status> {
    Status(unsafe { raw::proxy_set_buffer_bytes(buffer as u32, start, size, value.as_ptr(), value.len()) })
        .check()
}

/// Appends `value` to the buffer.
pub fn append_buffer(buffer: BufferType, value: &[u8]) -> Result<(), Status> {
    set_buffer_bytes(buffer, APPEND, 0, value)
}

/// Replaces the whole content of the buffer with `value`. Asks for the current
/// size first, so that exactly the existing bytes are overwritten whatever the
/// host does with oversize ranges.
pub fn replace_buffer(buffer: BufferType, value: &[u8]) -> Result<(), Status> {
    let current = buffer_size(buffer).unwrap_or(0);
    set_buffer_bytes(buffer, 0, current, value)
}

// --------------------------------------------------------------------------
// Header maps
// --------------------------------------------------------------------------

/// Value of header `key` (raw bytes); `Err(Status::NOT_FOUND)` when absent.
pub fn get_header(map: MapType, key: &str) -> Result<Vec<u8>, Status> {
    host_bytes(|data, size| unsafe {
        raw::proxy_get_header_map_value(map as u32, key.as_ptr(), key.len(), data, size)
    })
}

/// Adds `key: value` (keeps existing values of `key`).
pub fn add_header(map: MapType, key: &str, value: &[u8]) -> Result<(), Status> {
    Status(unsafe { raw::proxy_add_header_map_value(map as u32, key.as_ptr(), key.len(), value.as_ptr(), value.len()) })
        .check()
}

/// Sets `key: value`, replacing existing values of `key`.
pub fn replace_header(map: MapType, key: &str, value: &[u8]) -> Result<(), Status> {
    Status(unsafe {
        raw::proxy_replace_header_map_value(map as u32, key.as_ptr(), key.len(), value.as_ptr(), value.len())
    })
    .check()
}

/// Removes every value of `key` (OK when it was absent).
pub fn remove_header(map: MapType, key: &str) -> Result<(), Status> {
    Status(unsafe { raw::proxy_remove_header_map_value(map as u32, key.as_ptr(), key.len()) }).check()
}

/// All pairs of a map, in order; a malformed map from the host gives
/// `Err(Status::PARSE_FAILURE)`.
pub fn get_headers(map: MapType) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Status> {
    let bytes = host_bytes(|data, size| unsafe { raw::proxy_get_header_map_pairs(map as u32, data, size) })?;
    deserialize_map(&bytes).ok_or(Status::PARSE_FAILURE)
}

/// Replaces all pairs of a map.
pub fn set_headers<K: AsRef<[u8]>, V: AsRef<[u8]>>(map: MapType, pairs: &[(K, V)]) -> Result<(), Status> {
    let bytes = serialize_map(pairs);
    Status(unsafe { raw::proxy_set_header_map_pairs(map as u32, bytes.as_ptr(), bytes.len()) }).check()
}

fn put_u32le(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn get_u32le(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Serializes pairs in the proxy-wasm map format: u32 count; count x (u32 key
/// length, u32 value length); then every key and value followed by one 0x00
/// byte; all little-endian. No pairs gives 4 zero bytes.
pub fn serialize_map<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let text: usize = pairs.iter().map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 2).sum();
    let mut out = Vec::with_capacity(4 + 8 * pairs.len() + text);
    put_u32le(&mut out, pairs.len() as u32);
    for (k, v) in pairs {
        put_u32le(&mut out, k.as_ref().len() as u32);
        put_u32le(&mut out, v.as_ref().len() as u32);
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

/// Parses a serialized map with bounds checks (`None` when malformed). An
/// empty input, or fewer than 4 bytes, is an empty map.
pub fn deserialize_map(data: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if data.len() < 4 {
        return Some(Vec::new());
    }
    let count = get_u32le(data, 0)? as usize;
    let mut offset = count.checked_mul(8)?.checked_add(4)?;
    if offset > data.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let klen = get_u32le(data, 4 + 8 * i)? as usize;
        let vlen = get_u32le(data, 8 + 8 * i)? as usize;
        let key = data.get(offset..offset.checked_add(klen)?)?.to_vec();
        offset = offset.checked_add(klen)?.checked_add(1)?;
        let value = data.get(offset..offset.checked_add(vlen)?)?.to_vec();
        offset = offset.checked_add(vlen)?.checked_add(1)?;
        if offset > data.len() {
            return None; // the terminating 0x00 of the last value is missing
        }
        pairs.push((key, value));
    }
    Some(pairs)
}

// --------------------------------------------------------------------------
// Properties
// --------------------------------------------------------------------------

/// A property path as the ABI passes it: the segments joined by 0x00
/// (e.g. `["request", "path"]` -> `request\0path`).
pub fn property_path(path: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, segment) in path.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(segment.as_bytes());
    }
    out
}

/// The value of a property, e.g. `get_property(&["request", "path"])`;
/// `Err(Status::NOT_FOUND)` when the path names nothing.
pub fn get_property(path: &[&str]) -> Result<Vec<u8>, Status> {
    let path = property_path(path);
    host_bytes(|data, size| unsafe { raw::proxy_get_property(path.as_ptr(), path.len(), data, size) })
}

pub fn set_property(path: &[&str], value: &[u8]) -> Result<(), Status> {
    let path = property_path(path);
    Status(unsafe { raw::proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) }).check()
}

// --------------------------------------------------------------------------
// Streams and local responses
// --------------------------------------------------------------------------

/// Resumes a stream paused by returning [`Action::Pause`].
pub fn continue_stream(stream: StreamType) -> Result<(), Status> {
    Status(unsafe { raw::proxy_continue_stream(stream as u32) }).check()
}

pub fn close_stream(stream: StreamType) -> Result<(), Status> {
    Status(unsafe { raw::proxy_close_stream(stream as u32) }).check()
}

/// Answers the request directly with `status_code`, `headers` (serialized in
/// the proxy-wasm map format) and `body`. `details` is a short
/// machine-readable reason (e.g. `"missing_name"`).
pub fn send_local_response<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    status_code: u32,
    details: &str,
    body: &[u8],
    headers: &[(K, V)],
) -> Result<(), Status> {
    let map = serialize_map(headers);
    Status(unsafe {
        raw::proxy_send_local_response(
            status_code,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            map.as_ptr(),
            map.len(),
            NO_GRPC_STATUS,
        )
    })
    .check()
}

/// No headers, for [`send_local_response`]: `send_local_response(400, "x", b"", NO_HEADERS)`.
pub const NO_HEADERS: &[(&str, &str)] = &[];

// --------------------------------------------------------------------------
// Layotto runtime capabilities
// --------------------------------------------------------------------------

/// Reads `key` from the state store `store`. A key that does not exist gives
/// `Ok` with an empty value (as in Layotto).
pub fn get_state(store: &str, key: &[u8]) -> Result<Vec<u8>, Status> {
    host_bytes(|data, size| unsafe {
        raw::proxy_get_state(store.as_ptr(), store.len(), key.as_ptr(), key.len(), data, size)
    })
}

/// Calls the function with id `id` (HTTP path `method`, "" meaning "/") with
/// body `param`; `Ok` holds the answer body (only an HTTP 200 counts).
pub fn invoke_service(id: &str, method: &str, param: &[u8]) -> Result<Vec<u8>, Status> {
    host_bytes(|data, size| unsafe {
        raw::proxy_invoke_service(
            id.as_ptr(),
            id.len(),
            method.as_ptr(),
            method.len(),
            param.as_ptr(),
            param.len(),
            data,
            size,
        )
    })
}

/// Calls the host's foreign function `name` with `args`; `Ok` holds its
/// result. Names `runtime.v1.<Method>` take and return the protobuf messages of
/// the Layotto runtime API (e.g. `runtime.v1.GetState`: a serialized
/// `GetStateRequest` in, a `GetStateResponse` out; an `Empty` is 0 bytes).
pub fn call_foreign_function(name: &str, args: &[u8]) -> Result<Vec<u8>, Status> {
    host_bytes(|data, size| unsafe {
        raw::proxy_call_foreign_function(name.as_ptr(), name.len(), args.as_ptr(), args.len(), data, size)
    })
}

// --------------------------------------------------------------------------
// Runtime capabilities: state with ETags, pub/sub, locks, ids, configuration
// --------------------------------------------------------------------------

/// `(pointer, length)` of an optional ETag; `None` is the empty ETag ("no
/// ETag": last write wins).
fn etag_parts(etag: Option<&[u8]>) -> (*const u8, usize) {
    let etag = etag.unwrap_or(&[]);
    (etag.as_ptr(), etag.len())
}

/// Reads `key` and its ETag: `Ok((value, etag))`. A key that does not exist
/// gives an empty value and an empty ETag (Dapr's rule).
pub fn get_state_with_etag(store: &str, key: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Status> {
    host_bytes_pair(|value, value_size, etag, etag_size| unsafe {
        raw::proxy_get_state_with_etag(
            store.as_ptr(),
            store.len(),
            key.as_ptr(),
            key.len(),
            value,
            value_size,
            etag,
            etag_size,
        )
    })
}

/// Saves `value` under `key`. With `Some(etag)` (as read by
/// [`get_state_with_etag`]) the write happens only if the stored ETag is still
/// that one, else `Err(Status::CAS_MISMATCH)`: read again and retry. `None`:
/// last write wins.
pub fn set_state(store: &str, key: &[u8], value: &[u8], etag: Option<&[u8]>) -> Result<(), Status> {
    let (etag_data, etag_size) = etag_parts(etag);
    Status(unsafe {
        raw::proxy_set_state(
            store.as_ptr(),
            store.len(),
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            etag_data,
            etag_size,
        )
    })
    .check()
}

/// Deletes `key` (`Ok` when it was absent); the same ETag rule as [`set_state`].
pub fn delete_state(store: &str, key: &[u8], etag: Option<&[u8]>) -> Result<(), Status> {
    let (etag_data, etag_size) = etag_parts(etag);
    Status(unsafe {
        raw::proxy_delete_state(store.as_ptr(), store.len(), key.as_ptr(), key.len(), etag_data, etag_size)
    })
    .check()
}

/// Publishes `data` to `topic` of `pubsub`; `content_type` "" means the host's
/// default.
pub fn publish_event(pubsub: &str, topic: &str, data: &[u8], content_type: &str) -> Result<(), Status> {
    Status(unsafe {
        raw::proxy_publish_event(
            pubsub.as_ptr(),
            pubsub.len(),
            topic.as_ptr(),
            topic.len(),
            data.as_ptr(),
            data.len(),
            content_type.as_ptr(),
            content_type.len(),
        )
    })
    .check()
}

/// Tries once to take lock `resource` for `owner` for `expire_seconds` (> 0):
/// `Ok(true)` when taken, `Ok(false)` when another owner holds it.
pub fn try_lock(store: &str, resource: &str, owner: &str, expire_seconds: i32) -> Result<bool, Status> {
    let mut acquired = 0u32;
    Status(unsafe {
        raw::proxy_try_lock(
            store.as_ptr(),
            store.len(),
            resource.as_ptr(),
            resource.len(),
            owner.as_ptr(),
            owner.len(),
            expire_seconds,
            &mut acquired,
        )
    })
    .check()?;
    Ok(acquired == 1)
}

/// What [`unlock`] found (`UnlockResponse.Status` of the Layotto API). A
/// newtype, like [`Status`], because a host may return a code this SDK does
/// not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnlockStatus(pub u32);

impl UnlockStatus {
    pub const SUCCESS: UnlockStatus = UnlockStatus(0);
    /// Not locked: expired, or never taken.
    pub const NOT_LOCKED: UnlockStatus = UnlockStatus(1);
    pub const HELD_BY_OTHER: UnlockStatus = UnlockStatus(2);
}

/// Releases lock `resource` held by `owner`.
pub fn unlock(store: &str, resource: &str, owner: &str) -> Result<UnlockStatus, Status> {
    let mut result = 0u32;
    Status(unsafe {
        raw::proxy_unlock(
            store.as_ptr(),
            store.len(),
            resource.as_ptr(),
            resource.len(),
            owner.as_ptr(),
            owner.len(),
            &mut result,
        )
    })
    .check()?;
    Ok(UnlockStatus(result))
}

/// The next id of sequence `key` in sequencer `store` (increasing).
pub fn get_next_id(store: &str, key: &str) -> Result<u64, Status> {
    let mut id = 0u64;
    Status(unsafe { raw::proxy_get_next_id(store.as_ptr(), store.len(), key.as_ptr(), key.len(), &mut id) })
        .check()?;
    Ok(id)
}

/// The content of configuration item `key` (the store's default group and
/// label); `Err(Status::NOT_FOUND)` when there is no such item.
pub fn get_configuration(store: &str, key: &str) -> Result<Vec<u8>, Status> {
    host_bytes(|data, size| unsafe {
        raw::proxy_get_configuration(store.as_ptr(), store.len(), key.as_ptr(), key.len(), data, size)
    })
}

// --------------------------------------------------------------------------
// Small text helpers (no `format!`: keeps modules small)
// --------------------------------------------------------------------------

/// Appends the decimal digits of `value` (recursion at most 10 deep; no
/// indexing, so no panic paths).
pub fn push_decimal(out: &mut Vec<u8>, value: u32) {
    if value >= 10 {
        push_decimal(out, value / 10);
    }
    out.push(b'0' + (value % 10) as u8);
}
