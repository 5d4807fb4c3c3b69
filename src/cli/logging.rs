//! Where log lines go and how they look: `-v`/`-vv` or `RUST_LOG` choose what is logged;
//! `--log-format` chooses the form. By default, a terminal or a file gets text with a timestamp,
//! and the systemd journal (detected by `JOURNAL_STREAM` naming standard error, as systemd sets
//! it) gets lines with no timestamp of their own, each with its syslog priority (`<4>`), which the
//! journal turns into the entry's priority and time.

use std::io::Write;

use clap::ValueEnum;

/// How log lines are written to standard error.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// `journal` when standard error is the systemd journal, else `text`.
    Auto,
    /// `2026-11-30T16:00:00.000Z WARN  target] message`.
    Text,
    /// `<4>target: message`: no timestamp (the journal has one), the syslog priority first.
    Journal,
    /// One JSON object a line: `{"time", "level", "target", "message"}`.
    Json,
}

/// Sets up the logger for `verbose` (`-v` count) and `format`.
pub(crate) fn init(verbose: u8, format: LogFormat) {
    // Only this crate gets louder with -v: wasmtime and cranelift at debug drown everything else.
    let default = match verbose {
        0 => "warn",
        1 => "warn,wasm_node_cache=info",
        _ => "warn,wasm_node_cache=debug",
    };
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    match resolve(format) {
        LogFormat::Journal => {
            builder.format(|buf, record| {
                writeln!(
                    buf,
                    "<{}>{}: {}",
                    priority(record.level()),
                    record.target(),
                    record.args()
                )
            });
        }
        LogFormat::Json => {
            builder.format(|buf, record| {
                let line = serde_json::json!({
                    "time": jiff::Timestamp::now().to_string(),
                    "level": record.level().as_str().to_ascii_lowercase(),
                    "target": record.target(),
                    "message": record.args().to_string(),
                });
                writeln!(buf, "{line}")
            });
        }
        LogFormat::Text | LogFormat::Auto => {
            builder.format_timestamp_millis();
        }
    }
    builder.init();
}

/// `Auto` made concrete: the journal when `JOURNAL_STREAM` names this process's standard error.
pub(crate) fn resolve(format: LogFormat) -> LogFormat {
    match format {
        LogFormat::Auto if stderr_is_the_journal() => LogFormat::Journal,
        LogFormat::Auto => LogFormat::Text,
        other => other,
    }
}

/// systemd sets `JOURNAL_STREAM=<device>:<inode>` for a service whose standard error is the
/// journal; a child whose stderr was redirected elsewhere inherits the variable, so the device and
/// inode of file descriptor 2 must match it.
fn stderr_is_the_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    rustix::fs::fstat(std::io::stderr()).is_ok_and(|st| {
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        let (d, i) = (st.st_dev as u64, st.st_ino as u64);
        d == dev && i == ino
    })
}

/// The syslog priority of a level, as sd-daemon(3) prefixes lines.
fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_formats_are_kept_and_priorities_follow_syslog() {
        assert_eq!(resolve(LogFormat::Json), LogFormat::Json);
        assert_eq!(resolve(LogFormat::Text), LogFormat::Text);
        assert_eq!(priority(log::Level::Warn), 4);
        assert_eq!(priority(log::Level::Error), 3);
    }
}
