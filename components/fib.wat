;; fib(n): iterative Fibonacci in u64 (wrapping). Loops, so fuel metering is exercised.
(component
  (core module $m
    (func (export "fib") (param $n i32) (result i64)
      (local $a i64) (local $b i64) (local $t i64)
      i64.const 1
      local.set $b
      block $done
        loop $next
          local.get $n
          i32.eqz
          br_if $done
          local.get $a
          local.get $b
          i64.add
          local.set $t
          local.get $b
          local.set $a
          local.get $t
          local.set $b
          local.get $n
          i32.const 1
          i32.sub
          local.set $n
          br $next
        end
      end
      local.get $a))
  (core instance $i (instantiate $m))
  (func (export "fib") (param "n" u32) (result u64)
    (canon lift (core func $i "fib"))))
