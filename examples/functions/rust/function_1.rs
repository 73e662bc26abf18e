//! function_1 (id "id_1") - the client half of the Layotto FaaS demo, in Rust.
//!
//!   curl -H 'id: id_1' 'localhost:2045/?name=book1'
//!   -> There are 100 inventories for book1.
//!
//! Reads `name` from the form-encoded body (for a request without a body the
//! host hands over the URL query string instead), asks function id_2 for the
//! stock of that book and answers with a sentence. Behaves exactly like
//! examples/functions/function_1.c.

use proxy_wasm_sdk::{self as sdk, Action, BufferType, LogLevel, MapType};

sdk::export_abi!();
sdk::function_id!("id_1");

const MISSING_NAME: &[u8] = b"missing query parameter 'name'\n";

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

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes application/x-www-form-urlencoded text ('+' and %XX). Malformed
/// escapes are kept as they are.
fn form_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let [c, tail @ ..] = rest {
        rest = tail;
        match (*c, tail) {
            (b'+', _) => out.push(b' '),
            (b'%', [hi, lo, after @ ..]) => match (hex_value(*hi), hex_value(*lo)) {
                (Some(hi), Some(lo)) => {
                    out.push(hi * 16 + lo);
                    rest = after;
                }
                _ => out.push(b'%'),
            },
            (c, _) => out.push(c),
        }
    }
    out
}

/// The decoded value of the first `key=...` field of "a=b&key=value&...",
/// or None when there is no such field or its value is empty.
fn form_field(form: &[u8], key: &[u8]) -> Option<Vec<u8>> {
    for field in form.split(|&c| c == b'&') {
        if let Some(raw) = field.strip_prefix(key).and_then(|r| r.strip_prefix(b"=")) {
            let value = form_decode(raw);
            return if value.is_empty() { None } else { Some(value) };
        }
    }
    None
}

fn reject(code: u32, details: &str, body: &[u8]) {
    let _ = sdk::send_local_response(code, details, body, sdk::NO_HEADERS);
}

/// A request without body and without query string never reaches
/// proxy_on_request_body, so answer the missing parameter here.
#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_context_id: u32, _num_headers: usize, end_of_stream: u32) -> Action {
    if end_of_stream == 0 {
        return Action::Continue;
    }
    let path = match sdk::get_header(MapType::HttpRequestHeaders, ":path") {
        Ok(path) => path,
        Err(_) => return Action::Continue, // host without pseudo headers: no opinion
    };
    let has_query = match path.iter().position(|&c| c == b'?') {
        Some(at) => at + 1 < path.len(),
        None => false,
    };
    if has_query {
        return Action::Continue;
    }
    reject(400, "missing_name", MISSING_NAME);
    Action::Pause
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(_context_id: u32, _body_size: usize, _end_of_stream: u32) -> Action {
    let body = sdk::get_buffer(BufferType::HttpRequestBody).unwrap_or_default();
    let name = match form_field(&body, b"name") {
        Some(name) => name,
        None => {
            reject(400, "missing_name", MISSING_NAME);
            return Action::Continue;
        }
    };

    match sdk::invoke_service("id_2", "", &name) {
        Err(status) => {
            let mut out = b"invoke id_2 failed: status ".to_vec();
            sdk::push_decimal(&mut out, status.code());
            let _ = sdk::log_bytes(LogLevel::Error, &out);
            out.push(b'\n');
            reject(502, "invoke_failed", &out);
        }
        Ok(stock) => {
            let mut out = Vec::with_capacity(40 + stock.len() + name.len());
            out.extend_from_slice(b"There are ");
            out.extend_from_slice(&stock);
            out.extend_from_slice(b" inventories for ");
            out.extend_from_slice(&name);
            out.push(b'.');
            let _ = sdk::append_buffer(BufferType::HttpResponseBody, &out);
        }
    }
    Action::Continue
}
