//! function_2 (id "id_2") - the server half of the Layotto FaaS demo, in Rust.
//!
//! The whole request body is a book name; the answer is that key's value in
//! the state store "state_demo" (e.g. "100" after `redis-cli set book1 100`).
//! Behaves exactly like examples/functions/function_2.c.

use proxy_wasm_sdk::{self as sdk, Action, BufferType};

sdk::export_abi!();
sdk::function_id!("id_2");

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

#[no_mangle]
pub extern "C" fn proxy_on_request_body(_context_id: u32, _body_size: usize, _end_of_stream: u32) -> Action {
    let name = sdk::get_buffer(BufferType::HttpRequestBody).unwrap_or_default();
    match sdk::get_state("state_demo", &name) {
        Ok(value) => {
            let _ = sdk::append_buffer(BufferType::HttpResponseBody, &value);
        }
        Err(status) => {
            let mut msg = b"get_state failed: status ".to_vec();
            sdk::push_decimal(&mut msg, status.code());
            msg.push(b'\n');
            let _ = sdk::send_local_response(500, "get_state_failed", &msg, sdk::NO_HEADERS);
        }
    }
    Action::Continue
}
