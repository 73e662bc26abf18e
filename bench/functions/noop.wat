(module
  ;; The least a proxy-wasm function can do to answer hello's bytes: one host call.
  (import "env" "proxy_send_local_response"
    (func $respond (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "hello method=GET path=/ greeting=-\n")
  ;; one header pair, x-hello: 1 (count, key size, value size, "x-hello\00", "1\00")
  (data (i32.const 2048) "\01\00\00\00\07\00\00\00\01\00\00\00x-hello\001\00")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 8192))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $respond (i32.const 200) (i32.const 0) (i32.const 0)
                         (i32.const 1024) (i32.const 35) (i32.const 2048) (i32.const 22) (i32.const -1)))
    (i32.const 1)))
