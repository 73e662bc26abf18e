;; A component of the function world written by hand (no toolchain, compiles in milliseconds):
;; `handle` answers 200 with the request body, or "hello from wat" when there is none; the path
;; "/spin" never returns (for deadlines and fuel without a language runtime). Its core
;; module has a bump allocator (`realloc`, reset at every call) for the arguments wasmtime lowers.
;; The tests use it where a component's own cost must be small: deploy checks, reloads, the adapter's
;; per-call cost.
(component
  (core module $m
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
      (global.set $heap (i32.add (local.get $p) (local.get 3)))
      (block $enough
        (br_if $enough (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
        (drop (memory.grow (i32.add (i32.div_u (global.get $heap) (i32.const 65536)) (i32.const 1)))))
      (local.get $p))
    (data (i32.const 16) "hello from wat")
    (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
      ;; params: method (ptr, len), path (ptr, len), headers (ptr, len), body (ptr, len)
      (if (i32.and (i32.eq (local.get 3) (i32.const 5))
                   (i32.and (i32.eq (i32.load (local.get 2)) (i32.const 0x6970732f))  ;; "/spi"
                            (i32.eq (i32.load8_u offset=4 (local.get 2)) (i32.const 0x6e))))  ;; "n"
        (then (loop $forever (br $forever))))
      (global.set $heap (i32.const 1024))
      (i32.store16 (i32.const 64) (i32.const 200))
      (i32.store (i32.const 68) (i32.const 0))
      (i32.store (i32.const 72) (i32.const 0))
      (if (i32.eqz (local.get 7))
        (then (i32.store (i32.const 76) (i32.const 16)) (i32.store (i32.const 80) (i32.const 14)))
        (else (i32.store (i32.const 76) (local.get 6)) (i32.store (i32.const 80) (local.get 7))))
      (i32.const 64)))
  (core instance $i (instantiate $m))
  (type $headers (list (tuple string string)))
  (type $request (record (field "method" string) (field "path" string) (field "headers" $headers) (field "body" (list u8))))
  (type $response (record (field "status" u16) (field "headers" $headers) (field "body" (list u8))))
  (func $handle (param "request" $request) (result $response)
    (canon lift (core func $i "handle") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (instance $handler
    (export "request" (type $request))
    (export "response" (type $response))
    (export "handle" (func $handle)))
  (export "wasm-faas:function/handler@0.1.0" (instance $handler)))
