//! docker/Dockerfile read as the engine reads it: stages, their COPY sources and RUN steps, the
//! final image's configuration; and the targets Cargo.toml declares, where cargo finds them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn docker_file(name: &str) -> (PathBuf, String) {
    let path = repo().join("docker").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

/// One `FROM ... [AS name]` stage of the Dockerfile: its instructions, continuation lines
/// joined, comments dropped.
pub struct Stage {
    pub name: String,
    pub instructions: Vec<(String, String)>,
}

impl Stage {
    /// `COPY [--flags] SRC... DEST`: the flags, the sources and the destination of each.
    pub fn copies(&self) -> Vec<(Vec<String>, Vec<String>, String)> {
        let copies = self.instructions.iter().filter(|(i, _)| i == "COPY");
        copies
            .map(|(_, rest)| {
                let words: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
                let (flags, mut paths): (Vec<_>, Vec<_>) =
                    words.into_iter().partition(|w| w.starts_with("--"));
                let dest = paths.pop().unwrap();
                (flags, paths, dest)
            })
            .collect()
    }

    /// The sources it copies from the build context (not `--from` another stage).
    pub fn context_sources(&self) -> Vec<String> {
        let copies = self.copies().into_iter();
        copies
            .filter(|(flags, _, _)| !flags.iter().any(|f| f.starts_with("--from")))
            .flat_map(|(_, sources, _)| sources)
            .map(|s| s.trim_end_matches('/').to_owned())
            .collect()
    }

    pub fn runs(&self) -> impl Iterator<Item = &str> {
        let runs = self.instructions.iter().filter(|(i, _)| i == "RUN");
        runs.map(|(_, rest)| rest.as_str())
    }
}

pub fn stages() -> Vec<Stage> {
    let (_, text) = docker_file("Dockerfile");
    let mut stages: Vec<Stage> = Vec::new();
    let lines = text.lines().filter(|l| !l.trim_start().starts_with('#'));
    let joined = lines.collect::<Vec<_>>().join("\n").replace("\\\n", " ");
    for line in joined.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (instruction, rest) = line.split_once(' ').unwrap_or((line, ""));
        if instruction == "FROM" {
            let name = rest.split_once(" AS ").map_or("", |(_, n)| n.trim());
            stages.push(Stage {
                name: name.to_owned(),
                instructions: Vec::new(),
            });
        } else {
            let stage = stages.last_mut().expect("an instruction before FROM");
            stage
                .instructions
                .push((instruction.to_owned(), rest.to_owned()));
        }
    }
    stages
}

pub fn stage(name: &str) -> Stage {
    let found = stages().into_iter().find(|s| s.name == name);
    found.unwrap_or_else(|| panic!("docker/Dockerfile has no stage {name}"))
}

/// The Dockerfile's final stage: ENV, ENTRYPOINT + CMD, HEALTHCHECK's command, EXPOSE.
pub struct Image {
    pub env: BTreeMap<String, String>,
    pub run: Vec<String>,
    pub healthcheck: Vec<String>,
    pub expose: u16,
    pub user: String,
    pub volumes: Vec<String>,
    pub labels: String,
}

pub fn image() -> Image {
    let last = stages().pop().unwrap();
    let mut image = Image {
        env: BTreeMap::new(),
        run: Vec::new(),
        healthcheck: Vec::new(),
        expose: 0,
        user: String::new(),
        volumes: Vec::new(),
        labels: String::new(),
    };
    let json = |s: &str| -> Vec<String> { serde_json::from_str(s.trim()).unwrap() };
    let mut entrypoint = Vec::new();
    let mut cmd = Vec::new();
    for (instruction, rest) in &last.instructions {
        match instruction.as_str() {
            "ENV" => {
                for pair in rest.split_whitespace() {
                    let (k, v) = pair.split_once('=').unwrap();
                    image.env.insert(k.into(), v.into());
                }
            }
            "ENTRYPOINT" => entrypoint = json(rest),
            "CMD" => cmd = json(rest),
            "HEALTHCHECK" => image.healthcheck = json(rest.split_once("CMD").unwrap().1),
            "EXPOSE" => image.expose = rest.trim().parse().unwrap(),
            "USER" => image.user = rest.trim().to_owned(),
            "VOLUME" => image.volumes = json(rest),
            "LABEL" => image.labels.push_str(rest),
            _ => {}
        }
    }
    image.run = entrypoint.into_iter().chain(cmd).collect();
    image
}

/// Where each target Cargo.toml declares lives, as cargo finds it: `path`, else the default
/// for its kind (both forms, `NAME.rs` and `NAME/main.rs`), and the discovered `src/lib.rs`,
/// `src/main.rs` and build script.
pub fn declared_targets() -> Vec<(String, PathBuf)> {
    let manifest: toml::Table = std::fs::read_to_string(repo().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let package = manifest["package"]["name"].as_str().unwrap();
    let mut targets = Vec::new();
    let default = |dir: &str, name: &str| {
        let single = PathBuf::from(format!("{dir}/{name}.rs"));
        let folder = PathBuf::from(format!("{dir}/{name}/main.rs"));
        if repo().join(&folder).exists() {
            folder
        } else {
            single
        }
    };
    for (kind, dir) in [
        ("bin", "src/bin"),
        ("bench", "benches"),
        ("test", "tests"),
        ("example", "examples"),
    ] {
        let tables = manifest
            .get(kind)
            .and_then(|t| t.as_array())
            .cloned()
            .unwrap_or_default();
        for target in tables {
            let name = target["name"].as_str().unwrap();
            let path = match target.get("path").and_then(|p| p.as_str()) {
                Some(path) => PathBuf::from(path),
                None if kind == "bin" && name == package => PathBuf::from("src/main.rs"),
                None => default(dir, name),
            };
            targets.push((format!("{kind} {name}"), path));
        }
    }
    let lib = manifest.get("lib").and_then(|l| l.get("path"));
    let discovered = [
        ("lib", lib.and_then(|p| p.as_str()).unwrap_or("src/lib.rs")),
        ("bin (discovered)", "src/main.rs"),
    ];
    let build = manifest["package"].get("build").and_then(|b| b.as_str());
    let build = ("build script", build.unwrap_or("build.rs"));
    for (kind, path) in discovered.into_iter().chain([build]) {
        if repo().join(path).exists() {
            targets.push((kind.to_owned(), PathBuf::from(path)));
        }
    }
    targets
}

pub fn covered(sources: &[String], path: &Path) -> bool {
    sources.iter().any(|s| path.starts_with(s))
}

pub fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}
