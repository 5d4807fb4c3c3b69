//! The two kinds of compiled code a store holds, behind one trait, so that loading, compiling and
//! publishing are written once for components and core modules.

use std::fs::File;
use std::path::Path;

use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use crate::key::Kind;

/// A wasmtime handle to compiled code of one [`Kind`].
pub(crate) trait Compiled: Sized + Clone + Send + Sync + 'static {
    /// The kind named in artifact keys and trailers.
    const KIND: Kind;

    /// Compiles `wasm` to wasmtime's serialized form.
    fn precompile(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Vec<u8>>;

    /// `Component::deserialize` or `Module::deserialize`.
    ///
    /// # Safety
    /// `bytes` must be an artifact wasmtime produced for this engine's configuration (see
    /// wasmtime's own contract for `deserialize`).
    unsafe fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self>;

    /// Deserializes the open file `file` itself, mapped by wasmtime: `Module::deserialize_open_file`
    /// for a module; for a component, whose wasmtime API takes only a path,
    /// `Component::deserialize_file` through `/proc/self/fd`, which reaches that very inode
    /// whatever its name has become.
    ///
    /// # Safety
    /// As for [`Compiled::deserialize`], and the file must not change while it is mapped.
    unsafe fn deserialize_open(engine: &Engine, file: File) -> wasmtime::Result<Self>;
}

impl Compiled for Component {
    const KIND: Kind = Kind::Component;

    fn precompile(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Vec<u8>> {
        engine.precompile_component(wasm)
    }

    unsafe fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        // SAFETY: the caller upholds `deserialize`'s contract, which is wasmtime's.
        unsafe { Component::deserialize(engine, bytes) }
    }

    unsafe fn deserialize_open(engine: &Engine, file: File) -> wasmtime::Result<Self> {
        let proc_path = crate::fs::unnamed::proc_fd_path(&file);
        // SAFETY: the caller upholds `deserialize_file`'s contract, which is wasmtime's; `file`
        // stays open until wasmtime has opened and mapped the inode behind `proc_path`.
        let component = unsafe { Component::deserialize_file(engine, Path::new(&proc_path)) };
        drop(file);
        component
    }
}

impl Compiled for Module {
    const KIND: Kind = Kind::Module;

    fn precompile(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Vec<u8>> {
        engine.precompile_module(wasm)
    }

    unsafe fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        // SAFETY: the caller upholds `deserialize`'s contract, which is wasmtime's.
        unsafe { Module::deserialize(engine, bytes) }
    }

    unsafe fn deserialize_open(engine: &Engine, file: File) -> wasmtime::Result<Self> {
        // SAFETY: the caller upholds `deserialize_open_file`'s contract, which is wasmtime's.
        unsafe { Module::deserialize_open_file(engine, file) }
    }
}
