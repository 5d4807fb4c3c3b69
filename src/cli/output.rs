//! Rendering a start-up report for people (a table) and for machines (one JSON object).

use crate::LoadReport;

/// The report as one JSON object: `LoadReport`'s own `Serialize`, so the CLI and a node's
/// structured log share one schema.
pub fn report_json(report: &LoadReport) -> anyhow::Result<String> {
    Ok(serde_json::to_string(report)?)
}

/// The report as a table of components followed by the summary.
pub fn report_table(report: &LoadReport) -> String {
    let mut out = format!("{:<64}  {:<10}  {}\n", "HASH", "OUTCOME", "DETAIL");
    for e in &report.entries {
        let line = format!(
            "{:<64}  {:<10}  {}",
            hex::encode(e.hash),
            e.outcome.as_str(),
            e.reason().unwrap_or_default()
        );
        // No padding after the last word: a copied session or a diff shows no invisible spaces.
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&report.to_string());
    out
}

/// An error and its sources, `: `-separated, each cause once (the `{:#}` of an `anyhow::Error`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}
