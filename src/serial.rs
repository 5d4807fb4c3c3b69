//! How the report's fields that have no natural JSON form are written: hashes as hex, paths and
//! errors as text, durations as milliseconds. Used through `#[serde(serialize_with = ...)]`.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serializer;

pub(crate) fn hex<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

pub(crate) fn hex_list<S: Serializer>(list: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter().map(hex::encode))
}

/// Paths as (lossy) text: serde's own `Path` impl fails on a path that is not UTF-8, and a report
/// must never fail to print.
pub(crate) fn path<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

pub(crate) fn opt_path<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => path(p, s),
        None => s.serialize_none(),
    }
}

pub(crate) fn display<S: Serializer, T: Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

pub(crate) fn opt_display<S: Serializer, T: Display>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

pub(crate) fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e3)
}

/// Writes an error with its sources, each once.
pub(crate) struct Chain<'a>(pub &'a dyn std::error::Error);

impl Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

/// Permission bits as three or four octal digits (`444`), as `ls` and `chmod` spell them.
pub(crate) fn octal_mode<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{mode:03o}"))
}
