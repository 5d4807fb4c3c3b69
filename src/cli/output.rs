//! Rendering a start-up report for people (a table) and for machines (one JSON object).

use wasm_node_cache::LoadReport;

/// The report as one JSON object: `LoadReport`'s own `Serialize`, so the CLI and a node's
/// structured log share one schema.
pub fn report_json(report: &LoadReport) -> anyhow::Result<String> {
    Ok(serde_json::to_string(report)?)
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
/// the same on every node of a fleet); the raw number when it is beyond jiff's range.
pub fn format_unix_utc(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(
            || format!("{secs} s after the epoch"),
            |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
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
        assert_eq!(format_unix_utc(u64::MAX), format!("{} s after the epoch", u64::MAX));
    }
}
