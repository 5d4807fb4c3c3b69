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
                "reason": e.reason(),
                "rejected": e.rejected,
                "store_error": e.store_error,
            })
        })
        .collect();
    json!({
        "from_store": report.from_store,
        "compiled": report.compiled,
        "rejected": report.rejected,
        "skipped": report.skipped,
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
