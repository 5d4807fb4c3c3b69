//! Rendering a start-up report for people (a table) and for machines (one JSON object).

use serde_json::{Value, json};
use wasm_node_cache::LoadReport;

/// The report as one JSON object.
pub fn report_json(report: &LoadReport) -> Value {
    let entries: Vec<Value> = report
        .entries
        .iter()
        .map(|e| {
            json!({
                "hash": hex::encode(e.hash),
                "outcome": e.outcome.as_str(),
                "store": e.store.as_ref().map(|p| p.display().to_string()),
                "load_path": e.load_path.map(|p| p.as_str()),
                "reason": e.reason(),
                "rejected": e.rejected.as_ref().map(ToString::to_string),
                "store_error": e.store_error,
            })
        })
        .collect();
    json!({
        "from_store": report.from_store,
        "compiled": report.compiled,
        "rejected": report.rejected,
        "skipped": report.skipped,
        "unlisted": report.unlisted,
        "elapsed_ms": report.elapsed.as_secs_f64() * 1e3,
        "store": {
            "path": report.store.path.as_ref().map(|p| p.display().to_string()),
            "fingerprint": report.store.fingerprint,
            "readable": report.store.readable(),
            "writable": report.store.writable(),
            "read_error": report.store.read_error,
            "write_error": report.store.write_error,
            "written": report.store.written,
            "temp_files_removed": report.store.temp_files_removed,
        },
        "read_only_stores": report.read_only.iter().map(|ro| json!({
            "path": ro.path.display().to_string(),
            "error": ro.error,
            "hits": ro.hits,
            "other_fingerprints": ro.other_fingerprints.iter().map(|(fp, n)| json!({"fingerprint": fp, "files": n})).collect::<Vec<_>>(),
            "mismatch": ro.mismatch(&report.store.fingerprint),
        })).collect::<Vec<_>>(),
        "entries": entries,
    })
}

/// The report as a table of components followed by the summary.
pub fn report_table(report: &LoadReport) -> String {
    let mut out = format!("{:<64}  {:<10}  {}\n", "HASH", "OUTCOME", "DETAIL");
    for e in &report.entries {
        out.push_str(&format!(
            "{:<64}  {:<10}  {}\n",
            hex::encode(e.hash),
            e.outcome.as_str(),
            e.reason().unwrap_or_default()
        ));
    }
    out.push('\n');
    out.push_str(&report.to_string());
    out
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC` (no time-zone database needed, and
/// the same on every node of a fleet).
pub fn format_unix_utc(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's `civil_from_days`, for days since 1970-01-01 (unsigned: nothing before 1970).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(format_unix_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_unix_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_unix_utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_unix_utc(4_102_444_799), "2099-12-31 23:59:59 UTC");
    }
}
