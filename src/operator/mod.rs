//! The operator's door: what a store holds ([`ArtifactStore::status`]), whether every artifact a
//! start-up would load is sound ([`ArtifactStore::verify`]), and removal
//! ([`ArtifactStore::prune`], [`ArtifactStore::clear`]). Each returns a typed report that
//! serializes to the CLI's JSON; the CLI only renders them.

pub mod host;
pub mod prune;
pub mod status;
pub mod verify;

use crate::artifact_store::ArtifactStore;
use crate::error::{LockKind, StoreError};
pub use crate::store::FinishedBake;
use crate::store::Store;
pub use prune::{PruneOptions, PruneReport};
pub use status::StatusReport;
use status::{LockState, ReadOnlyStatus, StoreStatus};
pub use verify::VerifyReport;
use verify::{ReadOnlyVerification, StoreVerification};

impl ArtifactStore {
    /// What the writable store and each read-only store hold, from file names and trailers only
    /// (no payload hashing); takes no lock and changes nothing. A read-only store that is missing
    /// or refused is reported in place ([`ReadOnlyStatus::Unusable`]).
    ///
    /// Errors: [`StoreError::NoStore`] without a writable store, [`StoreError::Io`] when a store
    /// cannot be listed, [`StoreError::Profile`] when this build's profile engines cannot be built.
    pub fn status(&self) -> Result<StatusReport, StoreError> {
        self.status_of(false)
    }

    /// [`ArtifactStore::status`] as a health check: with `payloads`, every artifact this build
    /// loads is read and checked in full as a start-up checks it (a flipped byte is a bad
    /// artifact); and a lock held exclusively is waited for up to the lock timeout, past which it
    /// is a problem ([`StoreStatus::lock_error`]): a hung holder would delay every start that
    /// long. Changes nothing and takes no lock but the shared one it waits for.
    ///
    /// Errors as [`ArtifactStore::status`]'s.
    pub fn health(&self, payloads: bool) -> Result<StatusReport, StoreError> {
        let mut report = self.status_of(payloads)?;
        if matches!(report.store.lock, Some(LockState::Exclusive { .. })) {
            let store = self.operated_store()?;
            let deadline = self.stores().deadline(std::time::Instant::now());
            if let Err(e) = store.lock_shared_as_is(deadline, "check the store's health") {
                report.store.lock_error = Some(store.lock_failure(LockKind::Shared, e).into());
                report = report.judged();
            }
        }
        Ok(report)
    }

    fn status_of(&self, payloads: bool) -> Result<StatusReport, StoreError> {
        let writable = self.operated_store()?;
        let read_only = self.open_read_only();
        let inner = self.stores();
        let stores = std::iter::once(writable).chain(read_only.iter().filter_map(|(_, s)| s.as_ref().ok()));
        let profiles = status::Profiles::if_needed(inner.engine(), inner.keyed(), stores)?;
        let mut store = StoreStatus::collect(writable, inner.engine(), &profiles, payloads)?;
        store.max_size = inner.max_size();
        let read_only_stores = read_only
            .into_iter()
            .map(|(path, opened)| {
                match opened.and_then(|ro| StoreStatus::collect(&ro, inner.engine(), &profiles, payloads)) {
                    Ok(status) => ReadOnlyStatus::Open(status),
                    Err(error) => ReadOnlyStatus::Unusable {
                        path,
                        read_only: true,
                        error,
                    },
                }
            })
            .collect();
        Ok(StatusReport::new(store, read_only_stores))
    }

    /// Checks every artifact of this engine's fingerprint in every store exactly as a start-up
    /// does (owner and mode, trailer, binding to its name, payload checksum); changes nothing.
    /// Holds the writable store's shared lock while checking it (as a loading node does), if the
    /// store has a lock file, waiting at most the lock timeout.
    ///
    /// Errors: [`StoreError::Lock`] when the lock is not obtained, [`StoreError::Io`] when a store
    /// cannot be listed, [`StoreError::NoStore`] without a writable store.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let writable = self.operated_store()?;
        // The shared lock keeps a prune from unlinking files mid-check. It is only taken when the
        // lock file exists, because taking it would otherwise create the file.
        let _shared = if writable.has_lock_file() {
            let deadline = self.stores().deadline(std::time::Instant::now());
            Some(
                writable
                    .lock_shared_as_is(deadline, "verify the store")
                    .map_err(|source| writable.lock_failure(LockKind::Shared, source))?,
            )
        } else {
            None
        };
        // Portable CPU profiles of this build are current: a bake holds them for other hosts.
        let portable = crate::profile::portable_fingerprints(writable.is_keyed())
            .map_err(|reason| StoreError::Profile { profile: None, reason })?;
        let other_mode = self.mac_mode_fingerprints(writable)?;
        let store = StoreVerification::check(writable, &portable, &other_mode)?;
        let read_only_stores = self
            .open_read_only()
            .into_iter()
            .map(
                |(path, opened)| match opened.and_then(|ro| StoreVerification::check(&ro, &portable, &other_mode)) {
                    Ok(checked) => ReadOnlyVerification::Checked(checked),
                    Err(error) => ReadOnlyVerification::Unusable { path, error },
                },
            )
            .collect();
        Ok(VerifyReport {
            store,
            read_only_stores,
        })
    }

    /// Removes what `options` selects from the writable store, and leftover temporary files,
    /// under its exclusive lock (waiting at most the lock timeout). Only unlinks: a node that
    /// loaded a removed artifact keeps running it. In a dry run nothing is locked or removed.
    ///
    /// Order: artifacts of other fingerprints and files that are not the store's (`stale`; this
    /// build's portable CPU profiles are kept), then hashes outside `keep`, then the oldest of
    /// the rest until they fit `max_size`.
    ///
    /// Errors: [`StoreError::Lock`], [`StoreError::Io`] (listing, syncing the directory),
    /// [`StoreError::Profile`], [`StoreError::NoStore`]. A file that cannot be removed is not an
    /// error: it is in [`PruneReport::failed`] and the rest are still removed.
    pub fn prune(&self, options: &PruneOptions) -> Result<PruneReport, StoreError> {
        let store = self.operated_store()?;
        // Portable CPU profiles of this build are current, not stale: a bake holds them for
        // other hosts.
        let current = if options.stale {
            crate::store::maintenance::Current {
                portable: self.current_fingerprints(store.is_keyed())?,
                other_mode: self.mac_mode_fingerprints(store)?,
                min_idle: self.stores().min_idle(),
            }
        } else {
            crate::store::maintenance::Current::default()
        };
        if !options.dry_run {
            store.adopt(store.dir())?;
        }
        let deadline = self.stores().deadline(std::time::Instant::now());
        Ok(store.prune(options, &current, deadline)?)
    }

    /// Removes every artifact (any fingerprint) and leftover temporary files from the writable
    /// store, under its exclusive lock. The directory, its lock file and files that are not the
    /// store's stay.
    ///
    /// Errors as [`ArtifactStore::prune`]'s.
    pub fn clear(&self) -> Result<PruneReport, StoreError> {
        let store = self.operated_store()?;
        store.adopt(store.dir())?;
        Ok(store.clear(self.stores().deadline(std::time::Instant::now()))?)
    }

    /// Finishes the writable store as a bake to ship in an image: under its exclusive lock,
    /// leftover temporary files are removed, every artifact and the marker made `0444` and
    /// fsynced, the lock file removed and the directory made `0555`, so that a node of any uid
    /// can read it as a read-only store (owned by root or by that node's uid). Run it after a
    /// complete bake that [`ArtifactStore::verify`] found sound.
    ///
    /// Errors: [`StoreError::Lock`], [`StoreError::Io`] (naming a file that is not a bake's, or
    /// the directory), [`StoreError::NoStore`].
    pub fn finish_bake(&self) -> Result<FinishedBake, StoreError> {
        let store = self.operated_store()?;
        let deadline = self.stores().deadline(std::time::Instant::now());
        let exclusive = store
            .lock_exclusive(deadline, "finish the bake")
            .map_err(|source| store.lock_failure(LockKind::Exclusive, source))?;
        exclusive
            .finish_bake()
            .map_err(|e| StoreError::io(store.dir(), "finish the bake in", e))
    }

    /// This build's portable profiles' fingerprints in a mode (`keyed`: MAC mode).
    fn current_fingerprints(&self, keyed: bool) -> Result<Vec<crate::key::Fingerprint>, StoreError> {
        Ok(crate::profile::portable_fingerprints(keyed)
            .map_err(|reason| StoreError::Profile { profile: None, reason })?
            .into_iter()
            .map(|(_, fp)| fp)
            .collect())
    }

    /// Run without the key (plain mode), every fingerprint of this build in MAC mode: the
    /// engine's own and its portable profiles'. A MAC-mode node uses them, and nothing about them
    /// can be checked without its key, so maintenance keeps them. Empty with the key: plain-mode
    /// artifacts are stale to a node in MAC mode, and can be checked without a key anyway.
    fn mac_mode_fingerprints(&self, store: &Store) -> Result<Vec<crate::key::Fingerprint>, StoreError> {
        if store.is_keyed() {
            return Ok(Vec::new());
        }
        let mut fps = self.current_fingerprints(true)?;
        fps.push(crate::Fingerprint::of(self.engine(), true));
        Ok(fps)
    }

    /// The writable store, which every operator command works on.
    fn operated_store(&self) -> Result<&Store, StoreError> {
        match self.stores().writable() {
            crate::resolve::stores::Writable::Open(store) => Ok(store),
            crate::resolve::stores::Writable::Refused { reason, .. } => Err(reason.clone()),
            crate::resolve::stores::Writable::None => Err(StoreError::NoStore),
        }
    }

    /// Each read-only store, opened afresh so that a failure is reported with its typed cause.
    fn open_read_only(&self) -> Vec<(std::path::PathBuf, Result<Store, StoreError>)> {
        let inner = self.stores();
        inner
            .read_only_paths()
            .map(|path| {
                let opened = match inner.sealer() {
                    Ok(sealer) => Store::open_read_only(path, inner.fingerprint(), sealer.clone()).map_err(Into::into),
                    Err(e) => Err(e.clone()),
                };
                (path.to_path_buf(), opened)
            })
            .collect()
    }
}
