//! The deps crate keeps the programs' builds alike only while it lists every normal
//! dependency of every program, each as the workspace declares it: this test says which one
//! was added to a member and not here, or given features of its own in a member.

use std::{collections::BTreeSet, path::Path};

/// Members whose `[dependencies]` make up the programs' builds.
const MEMBERS: [&str; 4] = ["crates/push-core", "crates/callsim", "cmd-cdr", "cmd-status"];

/// Crates of this workspace (not third-party; they follow from the others).
const LOCAL: [&str; 2] = ["push-core", "voice-push-deps"];

/// The `[dependencies]` lines of a manifest: (name, rest of the line).
fn dependencies(manifest: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut found = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == "[dependencies]";
        } else if inside && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['.', '=', ' ']).next().unwrap_or_default().to_string();
            found.push((name, line.to_string()));
        }
    }
    found
}

fn read(dir: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(dir).join("Cargo.toml")).expect("a member's Cargo.toml")
}

#[test]
fn every_dependency_of_every_member_is_listed_here_as_the_workspace_declares_it() {
    let listed: BTreeSet<String> = dependencies(&read("crates/deps")).into_iter().map(|(name, _)| name).collect();
    let mut problems = Vec::new();
    for member in MEMBERS {
        for (name, line) in dependencies(&read(member)) {
            if LOCAL.contains(&name.as_str()) {
                continue;
            }
            if !listed.contains(&name) {
                problems.push(format!("{member}: `{name}` is missing from crates/deps/Cargo.toml"));
            }
            if !line.contains("workspace = true") && !line.contains(".workspace") {
                problems.push(format!("{member}: `{line}`: declare it in [workspace.dependencies]"));
            }
            if line.contains("features") {
                problems.push(format!("{member}: `{line}`: features belong in [workspace.dependencies]"));
            }
        }
    }
    for program in ["crates/callsim", "cmd-cdr", "cmd-status"] {
        if !dependencies(&read(program)).iter().any(|(name, _)| name == "voice-push-deps") {
            problems.push(format!("{program}: does not depend on voice-push-deps"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
