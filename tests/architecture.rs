//! The module graph runs one way (ARCHITECTURE.md): every `crate::` path in a file under src/ is
//! an edge from the file's top-level module to the one it names, and no edge may point up the
//! layers or out of a leaf. Paths that leave a folder must be spelled `crate::`, so that this
//! reading sees them: no `super::super::`, and no `super::` at the top of a top-level module.
//! Run with `--nocapture` to see the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer. A module may use its own layer's members only if it is itself;
/// it may use any module of a lower layer, except that layer 0 (the leaves) uses nothing.
const LAYERS: &[(&str, u8)] = &[
    ("text", 0),
    ("metrics", 0),
    ("rt", 0),
    ("config", 1),
    ("usage", 1),
    ("keys", 2),
    ("proxy", 3),
    ("ops", 4),
    ("server", 5),
    ("tasks", 5),
    ("lib", 6),
];

/// The binary's own files (`main.rs` and the commands in `cli/`), which use the library by its
/// public name only.
const BINARY: &[&str] = &["main", "cli"];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The top-level modules a `crate::` path starting at `rest` names: one, or several for a
/// `crate::{a::x, b}` group.
fn named(rest: &str) -> Vec<String> {
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut items = Vec::new();
        let mut current = String::new();
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            }
            current.push(c);
        }
        items.push(current);
        items
            .iter()
            .map(|i| i.trim().chars().take_while(|c| is_ident(*c)).collect())
            .filter(|s: &String| !s.is_empty() && s != "self")
            .collect()
    } else {
        let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        if name.is_empty() {
            Vec::new()
        } else {
            vec![name]
        }
    }
}

struct Graph {
    edges: BTreeMap<String, BTreeSet<String>>,
    /// `file: what` for paths that leave a folder without saying `crate::`.
    hidden: Vec<String>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut hidden = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let parts: Vec<String> = rel
            .with_extension("")
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let top = parts[0].clone();
        if BINARY.contains(&top.as_str()) {
            continue;
        }
        let top_level = parts.len() == 1 || (parts.len() == 2 && parts[1] == "mod");
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let at = format!("src/{}:{}", rel.display(), n + 1);
            if line.contains("super::super::") {
                hidden.push(format!("{at}: super::super:: (write crate::)"));
            }
            if top_level && top != "lib" && line.starts_with("use super::") {
                hidden.push(format!("{at}: super:: leaves {top} (write crate::)"));
            }
            let mut from = 0;
            while let Some(i) = line[from..].find("crate::") {
                let start = from + i;
                from = start + "crate::".len();
                if line[..start].chars().next_back().is_some_and(is_ident) {
                    continue;
                }
                for name in named(&line[from..]) {
                    edges.entry(top.clone()).or_default().insert(name);
                }
            }
        }
        edges.entry(top).or_default();
    }
    Graph { edges, hidden }
}

#[test]
fn module_edges_run_one_way() {
    let Graph { edges, hidden } = graph();
    for (from, to) in &edges {
        let to: Vec<&str> = to
            .iter()
            .filter(|t| *t != from)
            .map(String::as_str)
            .collect();
        println!("{from} -> {}", to.join(", "));
    }
    let mut wrong = hidden;
    for (from, to) in &edges {
        let Some(own) = layer(from) else {
            wrong.push(format!(
                "src/{from} is in no layer: add it to LAYERS in tests/architecture.rs and to ARCHITECTURE.md"
            ));
            continue;
        };
        for target in to.iter().filter(|t| *t != from) {
            match layer(target) {
                None => wrong.push(format!("{from} -> {target}: {target} is in no layer")),
                Some(_) if own == 0 => wrong.push(format!(
                    "{from} -> {target}: {from} is a leaf and uses nothing"
                )),
                Some(l) if l >= own => wrong.push(format!(
                    "{from} (layer {own}) -> {target} (layer {l}): runs against the direction"
                )),
                Some(_) => {}
            }
        }
    }
    assert!(wrong.is_empty(), "module graph:\n{}", wrong.join("\n"));
}

#[test]
fn the_reader_sees_grouped_and_nested_paths() {
    assert_eq!(named("config::{self, Config}"), ["config"]);
    assert_eq!(
        named("{keys::{Key, Profile}, proxy::State, self}"),
        ["keys", "proxy"]
    );
    assert!(named("*").is_empty());
}

#[test]
fn no_source_file_is_over_400_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > 400).then(|| format!("{}: {n} lines", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "split these by domain:\n{}",
        long.join("\n")
    );
}
