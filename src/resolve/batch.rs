//! Loading many artifacts at once, for both doors: verification on a helper thread,
//! deserialization on the caller.

use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime::Engine;

use super::compile::cores;
use crate::compiled::Compiled;
use crate::key::Hash32;
use crate::store::{Lookup, Store, Verified, with_stream_buf};

/// Fewer artifacts than this are loaded on the calling thread alone: a helper thread costs more to
/// start than it saves on a few checksums.
const PARALLEL_LOAD_MIN: usize = 4;
/// Verified artifacts (each an open descriptor) allowed to wait for deserialization, so that a
/// large store never runs into the descriptor limit. Enough that the helper rarely waits for room
/// (each wait is a wake-up for the deserializing thread to pay): on the corpus, warm/floor was
/// 0.02 to 0.07 lower with 32 than with 8 in each of seven runs, with 64 no lower than with 32.
const VERIFIED_QUEUE: usize = 32;
/// A payload at least this long makes a helper thread worth its cost. Below it, the helper's
/// wake-ups, and the TLB shootdowns its running on the other core adds to each of wasmtime's
/// `mprotect` calls, cost more than the checksum they hide (measured with the `scaling` bench:
/// 1,000 artifacts of 20 KB load faster on one thread).
const PIPELINE_MIN_PAYLOAD: u64 = 128 * 1024;

/// Loads every hash in `pending`, in any order.
///
/// One at a time on this thread until an artifact of at least [`PIPELINE_MIN_PAYLOAD`] bytes
/// shows that checksums are worth hiding; then a helper thread only verifies (open, check,
/// checksum, and in MAC mode the sealed copy) what is left, and this thread deserializes what is
/// verified and verifies too whenever nothing is waiting. Deserialization stays on one thread
/// because two concurrent `deserialize_file` calls measured slower than one after another on two
/// cores: each maps and mprotects, which serialises on the address-space lock and costs TLB
/// shootdowns.
pub(crate) fn load_all<T: Compiled>(store: &Store, engine: &Engine, pending: &[Hash32]) -> Vec<(Hash32, Lookup<T>)> {
    let finish = |(hash, verified): (Hash32, Result<Verified, Lookup<T>>)| {
        (hash, verified.map_or_else(|lookup| lookup, |v| v.deserialize(engine)))
    };
    let mut out = Vec::with_capacity(pending.len());
    let mut rest = pending;
    while let Some((hash, tail)) = rest.split_first() {
        rest = tail;
        let verified = with_stream_buf(|buf| store.open_verified(hash, T::KIND, buf));
        let large = verified.as_ref().is_ok_and(|v| v.payload_len() >= PIPELINE_MIN_PAYLOAD);
        out.push(finish((*hash, verified)));
        if large && rest.len() >= PARALLEL_LOAD_MIN && cores() >= 2 {
            pipeline(store, rest, &finish, &mut out);
            break;
        }
    }
    out
}

/// Verifies `pending` on a helper thread while this one deserializes (and verifies when nothing
/// is waiting), appending to `out`.
fn pipeline<T: Compiled>(
    store: &Store,
    pending: &[Hash32],
    finish: &impl Fn((Hash32, Result<Verified, Lookup<T>>)) -> (Hash32, Lookup<T>),
    out: &mut Vec<(Hash32, Lookup<T>)>,
) {
    let next = AtomicUsize::new(0);
    let claim = |buf: &mut Vec<u8>| {
        pending
            .get(next.fetch_add(1, Ordering::Relaxed))
            .map(|h| (*h, store.open_verified(h, T::KIND, buf)))
    };
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(VERIFIED_QUEUE);
        let claim = &claim;
        let helper = std::thread::Builder::new()
            .name("wnc-verify".into())
            .spawn_scoped(scope, move || {
                with_stream_buf(|buf| {
                    while let Some(item) = claim(buf) {
                        if tx.send(item).is_err() {
                            break;
                        }
                    }
                })
            });
        if let Err(e) = helper {
            // The closure, and with it the sender, is gone: this thread does all the work below.
            log::debug!("no verification thread ({e}); loading on one thread");
        }
        loop {
            if let Ok(item) = rx.try_recv() {
                out.push(finish(item));
            } else if let Some(item) = with_stream_buf(claim) {
                out.push(finish(item));
            } else if let Ok(item) = rx.recv() {
                out.push(finish(item));
            } else {
                break;
            }
        }
    });
}
