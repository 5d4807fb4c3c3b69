//! Guard for the layout decision in src/artifact.rs: the trailer after wasmtime's payload relies on
//! `Component::deserialize_file` ignoring trailing bytes, which wasmtime does not promise. If a
//! wasmtime upgrade breaks this, this test fails with instructions instead of every start-up
//! silently degrading to "rejected, recompiled".

use crate::common;

use wasmtime::component::Component;

#[test]
fn wasmtime_tolerates_a_trailer_after_the_artifact() {
    let engine = wasm_node_cache::init_wasm_engine().expect("engine");
    let mut bytes = common::precompiled_adder(&engine);
    bytes.extend_from_slice(&[0xa5; wasm_node_cache::testing::TRAILER_LEN]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("with-trailer.cwasm");
    std::fs::write(&path, &bytes).expect("write");
    // SAFETY: the file was produced just above by this engine; only inert bytes were appended.
    let loaded = unsafe { Component::deserialize_file(&engine, &path) };
    let component = loaded.unwrap_or_else(|e| {
        panic!(
            "wasmtime no longer accepts trailing bytes after a precompiled artifact ({e}). \
             The store's layout (src/artifact.rs) depends on it: move the trailer into a sidecar \
             file or deserialize the payload slice with Component::deserialize (copy path), and \
             bump the trailer's FORMAT_VERSION."
        )
    });
    assert_eq!(common::call_add(&engine, &component, 20, 22), 42);
}
