//! Loading many artifacts at once, for both doors: verification on a helper thread,
//! deserialization on the caller.

use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime::Engine;

use super::compile::cores;
use crate::compiled::Compiled;
use crate::key::Hash32;
use crate::store::{Lookup, Store, Verified};

/// Fewer artifacts than this are loaded on the calling thread alone: a helper thread costs more to
/// start than it saves on a few checksums.
const PARALLEL_LOAD_MIN: usize = 4;
/// Verified artifacts (each an open descriptor) allowed to wait for deserialization, so that a
/// large store never runs into the descriptor limit.
const VERIFIED_QUEUE: usize = 8;

/// Loads every hash in `pending`, in any order.
///
/// A helper thread only verifies (open, check, checksum, and in MAC mode the sealed copy); this
/// thread deserializes what is verified and verifies too whenever nothing is waiting.
/// Deserialization stays on one thread because two concurrent `deserialize_file` calls measured
/// slower than one after another on two cores: each maps and mprotects, which serialises on the
/// address-space lock and costs TLB shootdowns.
pub(crate) fn load_all<T: Compiled>(store: &Store, engine: &Engine, pending: &[Hash32]) -> Vec<(Hash32, Lookup<T>)> {
    if pending.len() < PARALLEL_LOAD_MIN || cores() < 2 {
        return pending.iter().map(|h| (*h, store.load_as::<T>(engine, h))).collect();
    }
    let next = AtomicUsize::new(0);
    let claim = |buf: &mut Vec<u8>| {
        pending
            .get(next.fetch_add(1, Ordering::Relaxed))
            .map(|h| (*h, store.open_verified(h, T::KIND, buf)))
    };
    let finish = |(hash, verified): (Hash32, Result<Verified, Lookup<T>>)| {
        (hash, verified.map_or_else(|lookup| lookup, |v| v.deserialize(engine)))
    };
    let mut out = Vec::with_capacity(pending.len());
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(VERIFIED_QUEUE);
        let claim = &claim;
        let helper = std::thread::Builder::new()
            .name("wnc-verify".into())
            .spawn_scoped(scope, move || {
                let mut buf = Vec::new();
                while let Some(item) = claim(&mut buf) {
                    if tx.send(item).is_err() {
                        break;
                    }
                }
            });
        if let Err(e) = helper {
            // The closure, and with it the sender, is gone: this thread does all the work below.
            log::debug!("no verification thread ({e}); loading on one thread");
        }
        let mut buf = Vec::new();
        loop {
            if let Ok(item) = rx.try_recv() {
                out.push(finish(item));
            } else if let Some(item) = claim(&mut buf) {
                out.push(finish(item));
            } else if let Ok(item) = rx.recv() {
                out.push(finish(item));
            } else {
                break;
            }
        }
    });
    out
}
