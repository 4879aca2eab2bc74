//! The repository explains itself: no file cites a document that is not in it. Every `*.md`
//! named in a source, script, template or document must exist in the repository, and no text
//! points at section numbers (`§4`) or issue numbers of documents kept elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Directories that are not the repository's own text (build output, tools, local state).
const SKIP: &[&str] = &[
    "target",
    ".git",
    ".venv",
    ".venv-lint",
    ".venv-sam",
    ".local",
    ".aws-sam",
    "node_modules",
];
const TEXT: &[&str] = &["rs", "md", "toml", "yaml", "yml", "sh", "py", "json", "txt"];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            if !SKIP.contains(&name.as_str()) {
                files(&p, out);
            }
        } else if p
            .extension()
            .is_some_and(|x| TEXT.contains(&x.to_string_lossy().as_ref()))
            || name == "Makefile"
            || name == "run"
        {
            out.push(p);
        }
    }
}

/// The `*.md` names a text mentions (`README.md`, `events/README.md`, `../elsewhere/notes.md`).
fn md_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices(".md") {
        let after = text[i + 3..].chars().next();
        if after.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let start = text[..i]
            .rfind(|c: char| !(c.is_alphanumeric() || "._/-".contains(c)))
            .map_or(0, |s| s + 1);
        let name = &text[start..i + 3];
        if name.len() > 3 {
            out.push(name.to_owned());
        }
    }
    out
}

#[test]
fn no_file_cites_a_document_outside_the_repository() {
    let root = root();
    let mut all = Vec::new();
    files(&root, &mut all);
    assert!(
        all.len() > 50,
        "the walk found the repository ({} files)",
        all.len()
    );
    let md_files: Vec<String> = all
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let mut problems = Vec::new();
    for path in &all {
        // The catalogue fixtures are third-party data, quoted verbatim; this file names the
        // patterns it looks for.
        if path.components().any(|c| c.as_os_str() == "catalogues") || path.ends_with(file!()) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let shown = path
            .strip_prefix(&root)
            .unwrap_or(path)
            .display()
            .to_string();
        for (n, line) in text.lines().enumerate() {
            for name in md_names(line) {
                let base = name.rsplit('/').next().unwrap_or(&name).to_owned();
                let here = path.parent().map(|d| d.join(&name));
                let exists = md_files.contains(&base)
                    && (!name.contains('/')
                        || root.join(&name).exists()
                        || here.is_some_and(|h| h.exists()));
                if !exists {
                    problems.push(format!(
                        "{shown}:{}: cites {name}, which is not in the repository",
                        n + 1
                    ));
                }
            }
            let lower = line.to_lowercase();
            let section = line.match_indices('§').any(|(i, _)| {
                // a public standard's section ("RFC 7518 §3.2") is fine
                !line[..i]
                    .trim_end()
                    .rsplit(' ')
                    .next()
                    .is_some_and(|w| w.chars().all(|c| c.is_ascii_digit()))
            });
            let issue = lower
                .match_indices("issue ")
                .any(|(i, _)| lower[i + 6..].starts_with(|c: char| c.is_ascii_digit()));
            if section || issue {
                problems.push(format!(
                    "{shown}:{}: cites a section or issue number: {}",
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "dangling citations:\n{}",
        problems.join("\n")
    );
}

#[test]
fn md_names_are_found_in_text() {
    assert_eq!(
        md_names("see `../elsewhere/notes.md` and README.md, not foo.mdx"),
        ["../elsewhere/notes.md", "README.md"]
    );
}
