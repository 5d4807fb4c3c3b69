//! `--metrics-file PATH` of `warm`, `status` and `verify`: what the report says, as gauges in the
//! Prometheus text format, written atomically for node_exporter's textfile collector, which must
//! never read a half-written file. Written on every exit path: a command that fails before its
//! report writes `healthy 0` with only the gauges every file has, so no earlier `healthy 1` stays
//! behind. The textfile directory is usually the exporter's user's or shared, so the
//! file is written as any file outside the store is ([`crate::fs::outside::replace_file`]): nothing
//! is opened under a name another user could have made, and only a new file of this uid's is
//! renamed over `PATH`.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use anyhow::Context;
use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::LoadReport;
use crate::operator::status::{ReadOnlyStatus, StatusReport, StoreStatus};

type Value = Gauge<f64, AtomicU64>;
type Labelled = Family<Vec<(String, String)>, Value>;

/// A registry of gauges, each named `wasm_node_cache_<name>`.
struct Metrics(Registry);

impl Metrics {
    fn new() -> Metrics {
        Metrics(Registry::with_prefix("wasm_node_cache"))
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        let g = Value::default();
        g.set(value);
        self.0.register(name, help, g);
    }

    fn family(&mut self, name: &str, help: &str, values: &[(Vec<(&str, String)>, f64)]) {
        let family = Labelled::default();
        for (labels, value) in values {
            let labels: Vec<(String, String)> = labels.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
            family.get_or_create(&labels).set(*value);
        }
        self.0.register(name, help, family);
    }

    /// The gauges every file has, labelled with the `command` that wrote it (so that the files of
    /// `warm`, `status` and `verify` sit side by side in one textfile directory): whether it
    /// found the store healthy, when it ran, and which build wrote it (`info`).
    /// `fingerprint` is the one the command looked artifacts up under; without it (a command
    /// that failed before its report) the node engine's in plain mode, made here.
    fn finish(mut self, command: &str, healthy: bool, fingerprint: Option<crate::Fingerprint>) -> Registry {
        let label = || vec![("command", command.to_owned())];
        // The command's own fingerprint when it has one: a second engine is never built on
        // `warm`'s path, which runs before every node start.
        let fingerprint = fingerprint
            .or_else(|| {
                crate::init_wasm_engine()
                    .ok()
                    .map(|engine| crate::Fingerprint::of(&engine, false))
            })
            .map(|fp| fp.to_hex())
            .unwrap_or_default();
        self.family(
            "info",
            "Always 1: the build that wrote this file (this crate's version, wasmtime's, and the engine fingerprint the command looked artifacts up under)",
            &[(
                vec![
                    ("command", command.to_owned()),
                    ("version", env!("CARGO_PKG_VERSION").to_owned()),
                    ("wasmtime", wasmtime_environ::VERSION.to_owned()),
                    ("fingerprint", fingerprint),
                ],
                1.0,
            )],
        );
        self.family(
            "healthy",
            "1 when the command's report names no problem, 0 otherwise",
            &[(label(), f64::from(u8::from(healthy)))],
        );
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.family(
            "last_run_timestamp_seconds",
            "When the command wrote this file (seconds since the Unix epoch): alert when it is old",
            &[(label(), now)],
        );
        self.0
    }
}

/// The gauges of a start-up (`warm`).
pub(crate) fn of_warm(report: &LoadReport) -> Registry {
    use crate::artifact_store::StoreWrite;
    use crate::node::report::Outcome;
    let mut m = Metrics::new();
    let mut origins = std::collections::BTreeMap::<&str, f64>::new();
    for o in [
        "store",
        "read_only_store",
        "portable",
        "compiled",
        "skipped",
        "unlisted",
    ] {
        origins.insert(o, 0.0);
    }
    let mut rejections = std::collections::BTreeMap::<&str, f64>::new();
    let mut not_stored = 0.0;
    for e in &report.entries {
        let origin = match &e.outcome {
            Outcome::FromStore if e.profile.is_some_and(|p| !p.is_native()) => "portable",
            Outcome::FromStore if e.store.as_ref() == report.store.path.as_ref() => "store",
            Outcome::FromStore => "read_only_store",
            Outcome::Compiled => "compiled",
            Outcome::Skipped(_) => "skipped",
            _ => "unlisted",
        };
        *origins.entry(origin).or_default() += 1.0;
        if let Some(r) = &e.rejected {
            *rejections.entry(r.kind()).or_default() += 1.0;
        }
        for r in &e.portable_refused {
            *rejections.entry(r.reason.kind()).or_default() += 1.0;
        }
        if matches!(e.stored, Some(StoreWrite::NotStored(_))) {
            not_stored += 1.0;
        }
    }
    let origins: Vec<_> = origins
        .into_iter()
        .map(|(o, n)| (vec![("origin", o.to_owned())], n))
        .collect();
    m.family(
        "components",
        "Components of the last start-up, by where their code came from",
        &origins,
    );
    let rejections: Vec<_> = rejections
        .into_iter()
        .map(|(r, n)| (vec![("reason", r.to_owned())], n))
        .collect();
    m.family(
        "rejections",
        "Stored artifacts refused in the last start-up (a portable one's refusal included), by reason",
        &rejections,
    );
    m.gauge(
        "startup_seconds",
        "Wall time of the last start-up",
        report.elapsed.as_secs_f64(),
    );
    m.gauge(
        "compile_seconds",
        "Wall time of the last start-up's compile and bake phases",
        report.compile_time.as_secs_f64(),
    );
    m.gauge(
        "lock_wait_seconds",
        "Time the last start-up waited for the store's locks, summed over every wait",
        report.lock_wait.as_secs_f64(),
    );
    m.gauge(
        "artifacts_written",
        "Artifacts the last start-up stored",
        report.store.written as f64,
    );
    m.gauge(
        "artifacts_evicted",
        "Least recently used artifacts the last start-up removed to keep the store within its bound",
        report.store.evicted as f64,
    );
    m.gauge(
        "artifacts_not_stored",
        "Artifacts the last start-up compiled and could not store",
        not_stored,
    );
    m.finish("warm", report.problems().is_empty(), Some(report.store.fingerprint))
}

/// What a command that failed before its report writes: `healthy 0` and the gauges every file
/// has.
pub(crate) fn of_failure(command: &str) -> Registry {
    Metrics::new().finish(command, false, None)
}

/// The gauges of `verify`: bad artifacts and unusable read-only stores.
pub(crate) fn of_verify(report: &crate::operator::VerifyReport) -> Registry {
    let mut m = Metrics::new();
    m.gauge(
        "verify_problems",
        "Bad artifacts, artifacts of this build not checkable without the key, and unusable read-only stores",
        report.problems() as f64,
    );
    m.finish("verify", report.problems() == 0, Some(report.store.fingerprint))
}

/// The gauges of `status`, one series per store.
pub(crate) fn of_status(report: &StatusReport) -> Registry {
    let mut m = Metrics::new();
    let stores: Vec<&StoreStatus> = std::iter::once(&report.store)
        .chain(report.read_only_stores.iter().filter_map(|r| match r {
            ReadOnlyStatus::Open(s) => Some(s),
            ReadOnlyStatus::Unusable { .. } => None,
        }))
        .collect();
    let label = |s: &StoreStatus| s.path.display().to_string();
    let mut bytes = Vec::new();
    let mut files = Vec::new();
    for s in &stores {
        let mut groups = std::collections::BTreeMap::<&str, (f64, f64)>::new();
        for g in ["current", "portable", "mac_mode", "stale"] {
            groups.insert(g, (0.0, 0.0));
        }
        for e in &s.entries {
            let group = match (e.current, e.profile) {
                (true, Some(p)) if !p.is_native() => "portable",
                (true, _) => "current",
                (false, _) if e.mac_mode => "mac_mode",
                (false, _) => "stale",
            };
            let slot = groups.entry(group).or_default();
            slot.0 += e.size as f64;
            slot.1 += 1.0;
        }
        for (g, (b, n)) in groups {
            bytes.push((vec![("store", label(s)), ("group", g.to_owned())], b));
            files.push((vec![("store", label(s)), ("group", g.to_owned())], n));
        }
    }
    m.family(
        "store_bytes",
        "Bytes of artifacts by store and fingerprint group (current: this engine's; portable: this build's CPU profiles; mac_mode: this build's MAC-mode artifacts seen without the key; stale: other fingerprints)",
        &bytes,
    );
    m.family(
        "store_artifacts",
        "Artifact files by store and fingerprint group",
        &files,
    );
    let per_store = |f: &dyn Fn(&StoreStatus) -> usize| -> Vec<(Vec<(&str, String)>, f64)> {
        stores
            .iter()
            .map(|s| (vec![("store", label(s))], f(s) as f64))
            .collect()
    };
    if let Some(max) = report.store.max_size {
        m.family(
            "store_max_bytes",
            "The bound the writable store keeps itself within",
            &[(vec![("store", label(&report.store))], max as f64)],
        );
    }
    m.family(
        "store_temp_files",
        "Unfinished temporary files by store",
        &per_store(&|s| s.temp_files),
    );
    m.family(
        "store_foreign_files",
        "Files that are not the store's, by store",
        &per_store(&|s| s.foreign_files.len()),
    );
    m.family(
        "store_bad_or_refused",
        "Artifacts with a bad trailer or payload, or refused by the loader, by store",
        &per_store(&|s| s.bad_or_refused),
    );
    if let Some(lock) = &report.store.lock {
        m.family(
            "lock_state",
            "The writable store's lock, probed without waiting: 1 for the state it is in",
            &["free", "shared", "exclusive", "unknown"].map(|state| {
                (
                    vec![("state", state.to_owned())],
                    f64::from(u8::from(lock.as_str() == state)),
                )
            }),
        );
    }
    if report.store.lock.is_some() {
        m.gauge(
            "lock_held_past_timeout",
            "1 when the writable store's lock was held exclusively past --lock-timeout (a hung holder delays every start that long)",
            f64::from(u8::from(report.store.lock_error.is_some())),
        );
    }
    if let Some(c) = &report.whitelist {
        m.gauge("whitelist_listed", "Hashes in the whitelist given", c.listed as f64);
        m.gauge(
            "whitelist_stored",
            "Of them, those the stores hold for this engine",
            c.stored as f64,
        );
    }
    m.finish("status", report.healthy, Some(report.store.fingerprint))
}

/// `text` with the samples of each metric in label order: a family keeps its label sets in a hash
/// map, and a file that changes order from run to run makes every diff and doc session noisy.
fn sort_samples(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut samples: Vec<&str> = Vec::new();
    let flush = |samples: &mut Vec<&str>, out: &mut String| {
        samples.sort_unstable();
        for s in samples.drain(..) {
            out.push_str(s);
            out.push('\n');
        }
    };
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut samples, &mut out);
            out.push_str(line);
            out.push('\n');
        } else {
            samples.push(line);
        }
    }
    flush(&mut samples, &mut out);
    out
}

/// Writes `registry` to `path` atomically, as a new file of this uid's, mode 0644, renamed over
/// `path` ([`crate::fs::outside::replace_file`]: a link, FIFO or device at `path` is refused).
pub(crate) fn write(path: &Path, registry: &Registry) -> anyhow::Result<()> {
    let mut text = String::new();
    encode_registry(&mut text, registry).context("cannot encode the metrics")?;
    let text = sort_samples(&text);
    crate::fs::outside::replace_file(path, text.as_bytes(), 0o644)
        .with_context(|| format!("{}: cannot write the metrics file", path.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn samples_come_in_label_order_within_their_metric() {
        let text = "# HELP a x\n# TYPE a gauge\na{o=\"z\"} 1\na{o=\"b\"} 2\n# HELP b y\nb 3\n# EOF\n";
        assert_eq!(
            super::sort_samples(text),
            "# HELP a x\n# TYPE a gauge\na{o=\"b\"} 2\na{o=\"z\"} 1\n# HELP b y\nb 3\n# EOF\n"
        );
    }
}
