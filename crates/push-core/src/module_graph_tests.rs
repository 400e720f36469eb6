//! push-core's top-level modules import each other without cycles (issue 12, point 3), so
//! each can be read, tested and replaced from its dependencies up. The test reads the
//! sources: every `crate::name` path and every name at the top of a `use crate::{…}` group
//! is an edge from the file's top-level module to `name`. Test code (`testing`, `*_tests`,
//! inline `mod tests`) may use anything and is left out.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

/// Top-level modules each module's non-test code refers to.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).expect("under src").to_string_lossy().replace('\\', "/");
            let top = rel.split('/').next().unwrap_or_default().trim_end_matches(".rs").to_string();
            if !rel.ends_with(".rs") || ["lib", "testing"].contains(&top.as_str()) || rel.contains("tests") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a source file");
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
            let edges = graph.entry(top.clone()).or_default();
            edges.extend(references(code).into_iter().filter(|m| *m != top));
        }
    }
    graph
}

/// The top-level module names `code` refers to through `crate::`.
fn references(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => names.extend(group_heads(group)),
            None => names.extend(ident(rest)),
        }
    }
    names
}

/// The first identifier of each item of a `{a::b, c, d::{e, f}}` group (after its `{`).
fn group_heads(group: &str) -> Vec<String> {
    let (mut heads, mut depth, mut at_item) = (Vec::new(), 1, true);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 1 => break,
            '}' => depth -= 1,
            ',' if depth == 1 => at_item = true,
            c if at_item && depth == 1 && (c.is_alphanumeric() || c == '_') => {
                heads.extend(ident(&group[i..]));
                at_item = false;
            }
            _ => {}
        }
    }
    heads
}

fn ident(s: &str) -> Option<String> {
    let name: String = s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!name.is_empty()).then_some(name)
}

/// A cycle through `from`, if any: the path back to it.
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![(from.to_string(), vec![from.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in graph.get(&node).into_iter().flatten() {
            if next == from {
                return Some([path.clone(), vec![from.to_string()]].concat());
            }
            if seen.insert(next.clone()) {
                stack.push((next.clone(), [path.clone(), vec![next.clone()]].concat()));
            }
        }
    }
    None
}

#[test]
fn the_parser_finds_paths_and_group_heads() {
    let code = "use crate::{config::{A, B}, outbox::NextState, slots};\nlet x = crate::retry::decide();";
    let names: Vec<String> = references(code).into_iter().collect();
    assert_eq!(names, ["config", "outbox", "retry", "slots"]);
}

#[test]
fn the_modules_of_push_core_import_each_other_without_cycles() {
    let graph = graph();
    assert!(graph.contains_key("delivery") && graph.contains_key("outbox"), "the sources were read: {graph:?}");
    let cycles: Vec<String> =
        graph.keys().filter_map(|m| cycle_from(&graph, m)).map(|path| path.join(" -> ")).collect();
    assert!(cycles.is_empty(), "import cycles among push-core's modules: {cycles:#?}");
}
