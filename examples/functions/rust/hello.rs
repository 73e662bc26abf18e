//! hello (id "hello") - a cheap function used for benchmarks, in Rust.
//!
//!   curl -H 'id: hello' -H 'greeting: hi' localhost:2045/x
//!   -> hello method=GET path=/x greeting=hi      (and header x-hello: 1)
//!
//! Everything happens in proxy_on_request_headers; the answer is built in one
//! buffer and handed over with a single append to the response body. Behaves
//! exactly like examples/functions/hello.c.

use proxy_wasm_sdk::{self as sdk, Action, BufferType, MapType};

sdk::export_abi!();
sdk::function_id!("hello");

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

/// Appends the request header's value, or "-" when it is absent.
fn push_request_header(out: &mut Vec<u8>, key: &str) {
    match sdk::get_header(MapType::HttpRequestHeaders, key) {
        Ok(value) => out.extend_from_slice(&value),
        Err(_) => out.push(b'-'),
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_context_id: u32, _num_headers: usize, _end_of_stream: u32) -> Action {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"hello method=");
    push_request_header(&mut out, ":method");
    out.extend_from_slice(b" path=");
    push_request_header(&mut out, ":path");
    out.extend_from_slice(b" greeting=");
    push_request_header(&mut out, "greeting");
    out.push(b'\n');
    let _ = sdk::append_buffer(BufferType::HttpResponseBody, &out);
    let _ = sdk::add_header(MapType::HttpResponseHeaders, "x-hello", b"1");
    Action::Continue
}
