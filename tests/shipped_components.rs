//! The binaries in config/wasm are exactly the WAT sources in components/, named by their SHA-256
//! and listed in config/wasm.conf; and each one runs.

mod common;

use std::collections::HashSet;

use wasm_node_cache::{read_whitelist_file, sha256};

#[test]
fn config_matches_sources() {
    let repo = common::repo();
    let sources = common::shipped_sources();
    assert!(sources.len() >= 3, "at least three shipped components");
    if std::env::var_os("WNC_UPDATE_COMPONENTS").is_some() {
        let dir = repo.join("config/wasm");
        for entry in std::fs::read_dir(&dir).expect("config/wasm") {
            std::fs::remove_file(entry.expect("entry").path()).expect("remove stale");
        }
        let mut conf =
            String::from("# Whitelisted components: SHA-256 of each file in config/wasm (see components/README.md).\n");
        for (name, bytes) in &sources {
            let h = hex::encode(sha256(bytes));
            std::fs::write(dir.join(&h), bytes).expect("write");
            conf.push_str(&format!("{h}  # {name}.wat\n"));
        }
        std::fs::write(repo.join("config/wasm.conf"), conf).expect("write wasm.conf");
    }
    let whitelist = read_whitelist_file(&repo.join("config/wasm.conf")).expect("wasm.conf parses");
    let mut expected = HashSet::new();
    for (name, bytes) in &sources {
        let h = sha256(bytes);
        expected.insert(h);
        let shipped = std::fs::read(repo.join("config/wasm").join(hex::encode(h))).unwrap_or_else(|e| {
            panic!("config/wasm lacks {name}.wat's binary ({e}); run with WNC_UPDATE_COMPONENTS=1")
        });
        assert_eq!(shipped, *bytes, "{name}");
    }
    assert_eq!(
        whitelist, expected,
        "config/wasm.conf lists exactly the shipped components"
    );
}

#[test]
fn shipped_components_run() {
    let engine = wasm_node_cache::init_wasm_engine().expect("engine");
    for (name, bytes) in common::shipped_sources() {
        let c = wasmtime::component::Component::new(&engine, &bytes).expect("compiles");
        match name.as_str() {
            "adder" => assert_eq!(common::call_add(&engine, &c, 40, 2), 42),
            "fib" => assert_eq!(common::call_fib(&engine, &c, 90), 2_880_067_194_370_816_120),
            "fnv1a" => assert_eq!(common::call_fnv1a(&engine, &c, "hello"), 0x4f9f2cab),
            other => panic!("no check for {other}"),
        }
    }
}
