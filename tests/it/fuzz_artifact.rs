//! Bytes from disk are hostile input. Property tests drive the trailer parser and the whole loader
//! with arbitrary and mutated bytes: never a panic, never an acceptance, never an allocation sized
//! by a length field, never a read out of bounds (the parser works on slices, so an out-of-bounds
//! read would be a panic, which these tests would catch).

use crate::common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use wasm_node_cache::testing::ArtifactKey;
use wasm_node_cache::testing::{self as artifact, Lookup, Sealer, Store, TRAILER_LEN, deadline_after};
use wasm_node_cache::{Fingerprint, Kind};

/// Counts allocations made by the current thread while counting is switched on.
struct CountingAlloc;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the thread-local counters
// are `const`-initialised `Cell`s, which never allocate, so there is no recursion.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocations_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    ALLOCATIONS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, ALLOCATIONS.with(Cell::get))
}

fn key() -> ArtifactKey {
    ArtifactKey {
        source: [7; 32],
        fingerprint: Fingerprint([9; 16]),
        kind: Kind::Component,
    }
}

/// A real artifact: the adder compiled by the node's engine, with its trailer.
fn real_artifact() -> &'static (Vec<u8>, ArtifactKey) {
    static ART: OnceLock<(Vec<u8>, ArtifactKey)> = OnceLock::new();
    ART.get_or_init(|| {
        let engine = wasm_node_cache::init_wasm_engine().expect("engine");
        let mut bytes = common::precompiled_adder(&engine);
        let k = key();
        let trailer = artifact::encode_trailer(&bytes, &k, &Sealer::Plain, 0);
        bytes.extend_from_slice(&trailer);
        (bytes, k)
    })
}

fn sealers() -> impl Strategy<Value = Sealer> {
    prop_oneof![Just(Sealer::Plain), any::<[u8; 32]>().prop_map(Sealer::Keyed)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_refused_without_allocating(bytes in prop::collection::vec(any::<u8>(), 0..2048), sealer in sealers()) {
        let (result, allocations) = allocations_during(|| artifact::verify(&bytes, &key(), &sealer));
        prop_assert!(result.is_err());
        prop_assert_eq!(allocations, 0);
    }

    #[test]
    fn arbitrary_trailer_after_a_real_payload_is_refused(trailer in prop::collection::vec(any::<u8>(), TRAILER_LEN..=TRAILER_LEN)) {
        let (real, k) = real_artifact();
        let mut bytes = real[..real.len() - TRAILER_LEN].to_vec();
        bytes.extend_from_slice(&trailer);
        let (result, allocations) = allocations_during(|| artifact::verify(&bytes, k, &Sealer::Plain));
        prop_assert!(result.is_err());
        prop_assert_eq!(allocations, 0);
    }

    #[test]
    fn any_mutation_of_a_real_artifact_is_refused(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..8),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let (real, k) = real_artifact();
        let mut bytes = real.clone();
        for (at, xor) in &edits {
            let i = at.index(bytes.len());
            bytes[i] ^= xor;
        }
        if let Some(at) = cut {
            bytes.truncate(at.index(bytes.len()));
        }
        prop_assert!(artifact::verify(&bytes, k, &Sealer::Plain).is_err());
    }

    #[test]
    fn a_lying_length_field_with_a_valid_tag_is_caught(claimed in 1usize..4096, actual in 1usize..4096) {
        // The trailer is genuine (valid tag) but was made for a payload of another length, as if a
        // file had been truncated or extended: the length check must catch it before anything is
        // sized or sliced by the recorded length.
        let k = key();
        let mut bytes = vec![0u8; actual];
        bytes.extend_from_slice(&artifact::encode_trailer(&vec![0u8; claimed], &k, &Sealer::Plain, 0));
        let (result, allocations) = allocations_during(|| artifact::verify(&bytes, &k, &Sealer::Plain));
        prop_assert_eq!(allocations, 0);
        if claimed == actual {
            prop_assert!(result.is_ok());
        } else {
            prop_assert_eq!(
                result,
                Err(wasm_node_cache::error::ArtifactError::LengthMismatch { declared: claimed as u64, actual: actual as u64 })
            );
        }
    }
}

proptest! {
    // Each case writes a file and maps it: fewer cases.
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_loader_refuses_any_file_it_did_not_write(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let engine = wasm_node_cache::init_wasm_engine().expect("engine");
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s"), wasm_node_cache::Fingerprint::of(&engine, false), Sealer::Plain).expect("store");
        let source = [3u8; 32];
        std::fs::write(store.path_of(&source), &bytes).expect("write");
        match store.load(&engine, &source) {
            Lookup::Rejected(_) => {}
            Lookup::Hit(..) => prop_assert!(false, "garbage accepted"),
            Lookup::Absent => prop_assert!(false, "file not seen"),
        }
    }
}

#[test]
fn the_loader_accepts_a_real_artifact_it_wrote() {
    let engine = wasm_node_cache::init_wasm_engine().expect("engine");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(
        &dir.path().join("s"),
        wasm_node_cache::Fingerprint::of(&engine, false),
        Sealer::Plain,
    )
    .expect("store");
    let source = common::adder_hash();
    store
        .lock_exclusive(deadline_after(Duration::from_secs(5)), "test")
        .expect("lock")
        .publish(&source, &common::precompiled_adder(&engine))
        .expect("publish");
    let Lookup::Hit(component, _) = store.load(&engine, &source) else {
        panic!("own artifact refused")
    };
    assert_eq!(common::call_add(&engine, &component, 1, 41), 42);
}

#[test]
fn the_allocation_counter_counts() {
    // Guards the zero-allocation assertions above against a counter that never counts.
    let (v, allocations) = allocations_during(|| vec![1u8; 4096]);
    assert_eq!(v.len(), 4096);
    assert_eq!(allocations, 1);
}

#[test]
fn verifying_a_sound_artifact_allocates_nothing_in_either_mode() {
    // The property tests reach the payload checksum only when a random case is sound; this one
    // always does, for both checksums (XXH3-128 in plain mode, BLAKE3 in MAC mode).
    let engine = wasm_node_cache::init_wasm_engine().expect("engine");
    let payload = common::precompiled_adder(&engine);
    for sealer in [Sealer::Plain, Sealer::Keyed([5; 32])] {
        let mut bytes = payload.clone();
        bytes.extend_from_slice(&artifact::encode_trailer(&payload, &key(), &sealer, 0));
        let (result, allocations) = allocations_during(|| artifact::verify(&bytes, &key(), &sealer));
        assert!(result.is_ok(), "{sealer:?}: {result:?}");
        assert_eq!(allocations, 0, "{sealer:?}");
    }
}

/// A store holding the adder, published by the store itself, with its artifact's bytes.
fn store_with_adder() -> &'static (tempfile::TempDir, Vec<u8>) {
    static STORE: OnceLock<(tempfile::TempDir, Vec<u8>)> = OnceLock::new();
    STORE.get_or_init(|| {
        let engine = wasm_node_cache::init_wasm_engine().expect("engine");
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(
            &dir.path().join("s"),
            wasm_node_cache::Fingerprint::of(&engine, false),
            Sealer::Plain,
        )
        .expect("store");
        let path = store
            .lock_exclusive(deadline_after(Duration::from_secs(5)), "test")
            .expect("lock")
            .publish(&common::adder_hash(), &common::precompiled_adder(&engine))
            .expect("publish")
            .path;
        let bytes = std::fs::read(path).expect("read artifact");
        (dir, bytes)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    #[test]
    fn the_streaming_loader_refuses_any_mutation_of_a_real_artifact(
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let engine = wasm_node_cache::init_wasm_engine().expect("engine");
        let (_, real) = store_with_adder();
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s"), wasm_node_cache::Fingerprint::of(&engine, false), Sealer::Plain).expect("store");
        let mut bytes = real.clone();
        let i = at.index(bytes.len());
        bytes[i] ^= xor;
        if let Some(c) = cut {
            bytes.truncate(c.index(bytes.len()));
        }
        std::fs::write(store.path_of(&common::adder_hash()), &bytes).expect("write");
        match store.load(&engine, &common::adder_hash()) {
            Lookup::Rejected(_) => {}
            Lookup::Hit(..) => prop_assert!(false, "mutated artifact accepted (byte {i} ^ {xor:#x})"),
            Lookup::Absent => prop_assert!(false, "file not seen"),
        }
    }
}
