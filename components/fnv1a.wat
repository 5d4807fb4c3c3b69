;; fnv1a(data): 32-bit FNV-1a of a string. Uses linear memory and the canonical ABI's realloc,
;; so the artifact carries a memory, a global and a string lift.
(component
  (core module $m
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 1024))
    ;; Bump allocator: never frees; grows memory when needed.
    (func (export "realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
      (local $ret i32)
      global.get $heap
      local.get $align
      i32.const 1
      i32.sub
      i32.add
      local.get $align
      i32.const 1
      i32.sub
      i32.const -1
      i32.xor
      i32.and
      local.tee $ret
      local.get $size
      i32.add
      global.set $heap
      block $fits
        global.get $heap
        memory.size
        i32.const 16
        i32.shl
        i32.le_u
        br_if $fits
        global.get $heap
        memory.size
        i32.const 16
        i32.shl
        i32.sub
        i32.const 16
        i32.shr_u
        i32.const 1
        i32.add
        memory.grow
        i32.const -1
        i32.ne
        br_if $fits
        unreachable
      end
      local.get $ret)
    (func (export "fnv1a") (param $ptr i32) (param $len i32) (result i32)
      (local $h i32) (local $end i32)
      i32.const 0x811c9dc5
      local.set $h
      local.get $ptr
      local.get $len
      i32.add
      local.set $end
      block $done
        loop $next
          local.get $ptr
          local.get $end
          i32.ge_u
          br_if $done
          local.get $h
          local.get $ptr
          i32.load8_u
          i32.xor
          i32.const 0x01000193
          i32.mul
          local.set $h
          local.get $ptr
          i32.const 1
          i32.add
          local.set $ptr
          br $next
        end
      end
      local.get $h))
  (core instance $i (instantiate $m))
  (func (export "fnv1a") (param "data" string) (result u32)
    (canon lift (core func $i "fnv1a") (memory (core memory $i "memory")) (realloc (core func $i "realloc")))))
