//! The crate's layout, checked from its source: every module stands on a floor (`FLOORS`), a
//! module may use only modules on its own floor or below, the modules' use graph has no circle,
//! and `unsafe` appears only in the files listed in `UNSAFE_FILES`. Test code (`#[cfg(test)]`
//! items and modules) is left out: a unit test may build a whole queue.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Floors from the bottom: what everyone shares, the Linux calls, storage, groups, clients, the
/// facade, and the fuzzing entry points (which may reach anything). A module takes the floor of
/// its longest listed prefix.
const FLOORS: &[(&str, u32)] = &[
    ("topic", 0),
    ("record", 0),
    ("error", 0),
    ("failpoint", 0),
    ("options", 0),
    ("sys", 1),
    ("background", 2),
    ("log", 3),
    ("group", 4),
    ("transaction", 4),
    ("catalog", 5),
    ("client", 6),
    ("queue", 7),
    ("fuzzing", 8),
];

/// The only files whose non-test code may contain `unsafe`.
const UNSAFE_FILES: &[&str] = &[
    "failpoint.rs",
    "group/file.rs",
    "transaction.rs",
    "log/records.rs",
    "log/recovery.rs",
    "log/segment.rs",
    "log/state.rs",
    "sys/clock.rs",
    "sys/file.rs",
    "sys/futex.rs",
    "sys/lock.rs",
    "sys/map.rs",
    "sys/mutex.rs",
];

/// One source file: its module path (`sys::file`), its path under `src/`, and its code without
/// comments, string literals and test items.
struct Source {
    module: String,
    file: String,
    code: String,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let texts: Vec<(PathBuf, String)> = files.into_iter().map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap())).collect();
    // Modules declared under `#[cfg(test)]` are test code as a whole.
    let mut test_modules = BTreeSet::new();
    for (path, text) in &texts {
        let parent = module_of(&root, path);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for pair in lines.windows(2) {
            if pair[0] == "#[cfg(test)]"
                && let Some(name) = pair[1].strip_prefix("mod ").and_then(|rest| rest.strip_suffix(';'))
            {
                test_modules.insert(join(&parent, name));
            }
        }
    }
    texts
        .into_iter()
        .map(|(path, text)| Source {
            module: module_of(&root, &path),
            file: path.strip_prefix(&root).unwrap().to_string_lossy().into_owned(),
            code: without_tests(&without_comments_and_strings(&text)),
        })
        .filter(|source| !test_modules.contains(&source.module))
        .collect()
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_owned() } else { format!("{parent}::{name}") }
}

/// `src/lib.rs` is the root (""), `src/a/mod.rs` and `src/a.rs` are `a`, `src/a/b.rs` is `a::b`.
fn module_of(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

/// The code with `//` comments and the contents of string and character literals blanked, so
/// that a doc link or a message naming a module is not taken for a use of it.
fn without_comments_and_strings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut chars = line.chars().peekable();
        let mut in_string = false;
        while let Some(c) = chars.next() {
            if in_string {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => {
                        in_string = false;
                        out.push('"');
                    }
                    _ => {}
                }
                continue;
            }
            match c {
                '/' if chars.peek() == Some(&'/') => break,
                '"' => {
                    in_string = true;
                    out.push('"');
                }
                // A character literal such as '"' or '{' (lifetimes have no closing quote).
                '\'' => {
                    let rest: String = chars.clone().take(3).collect();
                    let length = if rest.starts_with('\\') {
                        rest.find('\'').filter(|&i| i > 1)
                    } else {
                        rest.find('\'').filter(|&i| i == 1)
                    };
                    match length {
                        Some(n) => {
                            for _ in 0..=n {
                                chars.next();
                            }
                            out.push_str("' '");
                        }
                        None => out.push(c),
                    }
                }
                _ => out.push(c),
            }
        }
        out.push('\n');
    }
    out
}

/// The code without the items marked `#[cfg(test)]` (a statement or item ending in `;`, or a
/// braced block to its closing brace).
fn without_tests(code: &str) -> String {
    let mut out = String::new();
    let mut lines = code.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "#[cfg(test)]" {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let mut depth = 0i32;
        for item in lines.by_ref() {
            depth += item.matches('{').count() as i32 - item.matches('}').count() as i32;
            if depth <= 0 && (item.trim_end().ends_with(';') || item.trim_end().ends_with('}')) {
                break;
            }
        }
    }
    out
}

/// Every `crate::` path the code names, in `use` trees (braces expanded) and inline.
fn crate_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        let after = &rest[at + "crate::".len()..];
        rest = after;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let end = if is_use_tree(after) { after.find(';').unwrap_or(after.len()) } else { path_end(after) };
        expand(&after[..end], "", &mut paths);
    }
    paths
}

/// Whether the path at the start of `after` opens a braced use tree (`x::{a, b}`).
fn is_use_tree(after: &str) -> bool {
    after[path_end(after)..].starts_with('{')
}

fn path_end(text: &str) -> usize {
    text.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(text.len())
}

/// Expands a use tree (`a::{b, c::{d, self}}`) into paths (`a::b`, `a::c::d`, `a::c`).
fn expand(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split_whitespace().next().unwrap_or("").trim_end_matches("::");
        match path {
            "" => {}
            "self" => out.push(prefix.trim_end_matches("::").to_owned()),
            _ => out.push(format!("{prefix}{path}")),
        }
        return;
    };
    let head = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&inner[start..i], &format!("{prefix}{head}"), out);
                start = i + 1;
            }
            _ => {}
        }
    }
    expand(&inner[start..], &format!("{prefix}{head}"), out);
}

/// The module a path leads into: its longest prefix that is a module, or, for a name the crate
/// root re-exports, the module it comes from.
fn resolve(path: &str, modules: &BTreeSet<String>, reexports: &BTreeMap<String, String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    for n in (1..=parts.len()).rev() {
        let candidate = parts[..n].join("::");
        if modules.contains(&candidate) {
            return Some(candidate);
        }
    }
    reexports.get(parts[0]).cloned()
}

/// The names `lib.rs` re-exports (`pub use queue::{Queue, ...}`), and the module of each.
fn reexports(lib: &str, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    let mut rest = lib;
    while let Some(at) = rest.find("pub use ") {
        let after = &rest[at + "pub use ".len()..];
        let end = after.find(';').unwrap_or(after.len());
        let mut paths = Vec::new();
        expand(&after[..end], "", &mut paths);
        for path in paths {
            if let (Some(module), Some(name)) = (resolve(&path, modules, &BTreeMap::new()), path.rsplit("::").next()) {
                names.insert(name.to_owned(), module);
            }
        }
        rest = &after[end..];
    }
    names
}

fn floor(module: &str) -> u32 {
    FLOORS
        .iter()
        .filter(|(prefix, _)| module == *prefix || module.starts_with(&format!("{prefix}::")))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|&(_, floor)| floor)
        .unwrap_or_else(|| panic!("module {module} stands on no floor: add it to FLOORS"))
}

/// The use graph between modules (the root and a module's uses of itself left out).
fn uses() -> BTreeMap<String, BTreeSet<String>> {
    let sources = sources();
    let modules: BTreeSet<String> = sources.iter().map(|s| s.module.clone()).collect();
    let lib = sources.iter().find(|s| s.module.is_empty()).expect("src/lib.rs");
    let reexports = reexports(&lib.code, &modules);
    let mut graph = BTreeMap::new();
    for source in sources.iter().filter(|s| !s.module.is_empty()) {
        let targets: BTreeSet<String> = crate_paths(&source.code)
            .iter()
            .filter_map(|path| resolve(path, &modules, &reexports))
            .filter(|target| !target.is_empty() && *target != source.module)
            .collect();
        graph.insert(source.module.clone(), targets);
    }
    graph
}

#[test]
fn no_module_uses_a_floor_above_its_own() {
    let graph = uses();
    let upward: Vec<(&String, &String)> = (graph.iter())
        .flat_map(|(from, targets)| targets.iter().map(move |to| (from, to)))
        .filter(|(from, to)| floor(to) > floor(from))
        .collect();
    assert!(upward.is_empty(), "modules use a floor above their own (from, to): {upward:?}");
}

#[test]
fn the_use_graph_has_no_circle() {
    let graph = uses();
    // Depth-first search; a module met again while still on the path closes a circle.
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            return Some(path[at..].iter().cloned().chain([module.to_owned()]).collect());
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_owned());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(module.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(circle) = visit(module, &graph, &mut Vec::new(), &mut done) {
            panic!("modules use each other in a circle: {}", circle.join(" -> "));
        }
    }
}

#[test]
fn unsafe_code_lives_only_in_the_files_allowed_to_hold_it() {
    let holding: BTreeSet<String> = sources()
        .into_iter()
        .filter(|s| s.code.split(|c: char| !(c.is_alphanumeric() || c == '_')).any(|word| word == "unsafe"))
        .map(|s| s.file)
        .collect();
    let allowed: BTreeSet<String> = UNSAFE_FILES.iter().map(|f| (*f).to_owned()).collect();
    let new: Vec<_> = holding.difference(&allowed).collect();
    let gone: Vec<_> = allowed.difference(&holding).collect();
    assert!(new.is_empty(), "unsafe outside the allowed files: {new:?}");
    assert!(gone.is_empty(), "no unsafe left, remove from UNSAFE_FILES: {gone:?}");
}

#[test]
fn the_checker_reads_use_trees_test_items_and_literals() {
    let mut paths = Vec::new();
    expand("a::{b, c::{d, self}, e as f}", "", &mut paths);
    assert_eq!(paths, ["a::b", "a::c::d", "a::c", "a::e"]);
    let code = without_tests(&without_comments_and_strings(
        "use crate::x::{self, Y};\n// crate::comment\nlet s = \"crate::string\";\nlet c = '{';\n#[cfg(test)]\nuse crate::test_only;\n#[cfg(test)]\nmod tests {\n    use crate::inside;\n}\nfn f() { crate::z::g() }\n",
    ));
    assert_eq!(crate_paths(&code), ["x", "x::Y", "z::g"]);
}
