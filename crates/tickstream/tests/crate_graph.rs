//! The crate graph is part of the design: `docs/design.md` ("The crate map") says which crate may
//! import which, in layers; this test reads that table and every `crates/*/Cargo.toml` and fails
//! when the two disagree, so the map a newcomer reads is the graph the compiler builds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// Crate (folder name) → (layer, what it may import), from the design doc's table.
fn the_map() -> BTreeMap<String, (u32, BTreeSet<String>)> {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/design.md")).expect("docs/design.md");
    let table = doc.split_once("| Layer | Crate | Owns | May import |").expect("the crate map table").1;
    let mut map = BTreeMap::new();
    for line in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let layer: u32 = cells[0].parse().expect("layer number");
        let name = cells[1].trim_matches('`').to_owned();
        let imports = if cells[3] == "—" || cells[3].starts_with("every crate") {
            BTreeSet::new()
        } else {
            cells[3].split(',').map(|c| c.trim().to_owned()).collect()
        };
        map.insert(name, (layer, imports));
    }
    map
}

/// Crate (folder name) → the tickstream crates and the `redis` client in its `[dependencies]`.
fn the_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(Path::new(ROOT).join("crates")).expect("crates/") {
        let dir = entry.expect("entry").path();
        let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else { continue };
        // Normal dependencies only: dev-dependencies may reach further (a test needs a server).
        let deps = manifest.split("\n[dependencies]\n").nth(1).unwrap_or_default();
        let deps = deps.split("\n[").next().unwrap_or_default();
        let names = deps
            .lines()
            .filter_map(|l| l.split(['.', ' ', '=']).next())
            .filter_map(|n| {
                n.strip_prefix("tickstream-")
                    .map(str::to_owned)
                    .or((n == "redis").then(|| "redis-client".to_owned()))
            })
            .collect();
        graph.insert(dir.file_name().expect("name").to_string_lossy().into_owned(), names);
    }
    graph
}

#[test]
fn every_crate_imports_only_what_the_map_allows_and_only_from_lower_layers() {
    let map = the_map();
    let graph = the_graph();
    assert_eq!(
        map.keys().collect::<BTreeSet<_>>(),
        graph.keys().collect::<BTreeSet<_>>(),
        "the map and crates/ list different crates"
    );
    let mut problems = Vec::new();
    for (name, (layer, allowed)) in &map {
        for dep in allowed {
            match map.get(dep) {
                Some((l, _)) if l < layer => {}
                Some((l, _)) => {
                    problems.push(format!("{name} (layer {layer}) may import {dep} of layer {l}"))
                }
                None => problems.push(format!("{name} may import {dep}, which is not a crate")),
            }
        }
        if name == "tickstream" {
            continue; // the binary wires everything
        }
        for dep in &graph[name] {
            if dep == "redis-client" {
                if name != "redis" {
                    problems.push(format!("{name} compiles the Redis client; only `redis` may"));
                }
            } else if !allowed.contains(dep) {
                problems
                    .push(format!("{name} imports {dep}, which its row in docs/design.md does not allow"));
            }
        }
    }
    assert!(problems.is_empty(), "crate graph vs docs/design.md:\n{}", problems.join("\n"));
}
