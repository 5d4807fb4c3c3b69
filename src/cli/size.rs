//! Human sizes: `--max-size 500M` in, `12.3 KiB` out. Multiples are powers of 1024, as in
//! sccache's `SCCACHE_CACHE_SIZE` and `du -h`.

pub use crate::config::parse_size;

/// A foreign file of a store as the commands print it: its path, escaped (another user may have
/// named it), and its size or `a directory`.
pub fn foreign_file(f: &crate::operator::status::ForeignFileStatus) -> (String, String) {
    let size = if f.directory {
        "a directory".to_owned()
    } else {
        format_size(f.size)
    };
    (
        crate::escape::escape_control(&f.file.to_string_lossy()).into_owned(),
        size,
    )
}

/// Bytes for people: `812 B`, `12.3 KiB`, `1.5 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_bytes_and_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("500MiB"), Ok(500 << 20));
        assert_eq!(parse_size("500mb"), Ok(500 << 20));
        assert_eq!(parse_size(" 10 M "), Ok(10 << 20));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("0.5K"), Ok(512));
    }

    #[test]
    fn refuses_nonsense_with_the_text() {
        for bad in ["", "M", "-1", "1.2.3G", "12X", "1e9", "G2", "1 0M"] {
            let err = parse_size(bad).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
        assert!(parse_size("99999999999T").is_err(), "overflow is an error, not a wrap");
        assert!(parse_size("18446744073709551615").is_ok());
        assert!(parse_size("18446744073709551616").is_err());
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1024), "1.0 KiB");
        assert_eq!(format_size(12_600), "12.3 KiB");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
    }
}
