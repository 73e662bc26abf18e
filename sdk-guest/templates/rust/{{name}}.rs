//! {{name}}: a wasm-faas function (proxy-wasm 0.2.1 + Layotto ABI), scaffolded by `wasm-faas new`.
//!
//!   wasm-faas build && wasm-faas dev        # or: wasm-faas serve --functions build
//!   wasm-faas invoke {{name}} -d you        # -> hello, you from {{name}}
//!
//! No cargo: `wasm-faas build` compiles the SDK (one file) and this file with rustc.

use proxy_wasm_sdk::{self as sdk, Action, BufferType, LogLevel};

sdk::export_abi!();
sdk::function_id!("{{name}}");

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_context_id: u32, _parent_context_id: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_context_id: u32, _size: usize) -> bool {
    true
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_context_id: u32, _size: usize) -> bool {
    true
}

#[no_mangle]
pub extern "C" fn proxy_on_done(_context_id: u32) -> bool {
    true
}

/// Answers "hello, <who> from {{name}}\n"; `who` is the request body, or "world".
fn greet(who: &[u8]) {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"hello, ");
    out.extend_from_slice(if who.is_empty() { b"world" } else { who });
    out.extend_from_slice(b" from {{name}}\n");
    let _ = sdk::append_buffer(BufferType::HttpResponseBody, &out);
    let _ = sdk::log_bytes(LogLevel::Info, &out);
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_context_id: u32, _num_headers: usize, end_of_stream: u32) -> Action {
    if end_of_stream != 0 {
        greet(b"");
    }
    Action::Continue
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(_context_id: u32, _body_size: usize, end_of_stream: u32) -> Action {
    if end_of_stream != 0 {
        let body = sdk::get_buffer(BufferType::HttpRequestBody).unwrap_or_default();
        greet(&body);
    }
    Action::Continue
}
