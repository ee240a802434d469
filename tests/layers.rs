//! The modules of `src/` use one another one way down: no module uses a module of a higher
//! layer, and no set of modules uses itself round a circle. Run alone with
//! `cargo test --test layers`.
//!
//! Why it matters: a circle makes every module in it a part of every other, so none can be read,
//! tested or changed alone; an upward use is the first arrow of a circle to come.
//!
//! How it checks: it reads `src/**/*.rs` as text, drops comments, literals and the items under
//! `#[cfg(test)]` (tests may reach anywhere), and collects the paths that name a module of this
//! crate: those starting with `crate::`, `super::` or `self::`, with the name of a child
//! module or of a module imported by `use`, and with `labgate::` in `main.rs`. Each path, in a
//! `use` or in code alike, counts as a use of the file of the deepest module it names
//! (`crate::db::users::User` uses `src/db/users.rs`); through a re-export (`pub use
//! pool::Pool` in `db`), of the file that defines the item. Declaring a child module (`mod
//! x;`) and re-exporting from it are a module's public face, not uses; importing a module's
//! name is no use until the name is used.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The layers, bottom first, each with why it sits there. A module may use the modules of its
/// own layer and of the layers below. A name stands for that module and every module under it;
/// when names overlap, the longest one that fits decides. Within a layer, the groups written
/// `a | b` are kept apart: neither may use the other.
const LAYERS: &[(&str, &str)] = &[
    (
        "error model crypto secrets config logging metrics process authz gate::rules gate::snippets",
        "plain values, rules and process plumbing: they know nothing of the store, of GitLab or of HTTP \
         (secrets: the key file and sealing, which the store's callers use before they write)",
    ),
    (
        "db",
        "the store: it knows SQLite and the model, and nothing of the rules of sign-in or of HTTP",
    ),
    (
        "gitlab throttle",
        "talking to GitLab and counting attempts: tools the operations use, knowing nothing of them",
    ),
    (
        "audit settings gitlab_config gitlab_check provisioning accounts signin revalidation gate",
        "the operations: what labgate does to its data, the same for pages and API, without HTTP \
         (revalidation applies the sign-in's rules again, so it uses signin)",
    ),
    (
        "gitlab_provisioning",
        "provisioning runs: they read GitLab and apply the rules of `provisioning` through the \
         same operations (the GitLab configuration, accounts' logins), so they stand above them",
    ),
    (
        "web",
        "the HTTP plumbing that pages and API share: the state, the request, who is asking, dispatch",
    ),
    (
        "pages | api",
        "the handlers, HTML pages and JSON endpoints: each calls the operations, neither the other",
    ),
    (
        "routes",
        "the route table: names every handler, so it stands above both kinds",
    ),
    (
        "server",
        "serving over oxhttp: hands each request to dispatch with the route table it is given",
    ),
    (
        "lib main",
        "the crate root and the binary: wire the route table, the state and the server together",
    ),
];

#[test]
fn src_modules_use_each_other_one_way_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let problems = check(&src, LAYERS);
    assert!(
        problems.is_empty(),
        "the modules of src/ must use each other one way down (see LAYERS in tests/layers.rs):\n{}",
        problems.join("\n")
    );
}

/// Every way `src` breaks the layers: circles, upward uses, uses between groups kept apart,
/// files in no layer and names of a layer that match no module.
fn check(src: &Path, layers: &[(&str, &str)]) -> Vec<String> {
    let modules = read_modules(src);
    let mut problems = Vec::new();
    let layer_of = |name: &str| {
        let mut best: Option<(usize, usize, usize)> = None; // (name length, layer, group)
        for (layer, (names, _)) in layers.iter().enumerate() {
            for (group, part) in names.split('|').enumerate() {
                for candidate in part.split_whitespace() {
                    if within(name, candidate)
                        && best.is_none_or(|(len, _, _)| candidate.len() > len)
                    {
                        best = Some((candidate.len(), layer, group));
                    }
                }
            }
        }
        best.map(|(_, layer, group)| (layer, group))
    };
    for (names, _) in layers {
        for candidate in names.split(['|', ' ']).filter(|n| !n.is_empty()) {
            if !modules.iter().any(|m| within(&m.name, candidate)) {
                problems.push(format!(
                    "LAYERS names `{candidate}`, which is no module of src/"
                ));
            }
        }
    }
    for m in modules.iter().filter(|m| !m.test_only) {
        if layer_of(&m.name).is_none() {
            problems.push(format!(
                "{} (`{}`) is in no layer: add it to LAYERS",
                m.file, m.name
            ));
        }
    }
    let edges = uses(&modules);
    for ((from, to), path) in &edges {
        let (Some(low), Some(high)) =
            (layer_of(&modules[*from].name), layer_of(&modules[*to].name))
        else {
            continue;
        };
        let edge = format!(
            "{} uses {} (`{path}`)",
            modules[*from].file, modules[*to].file
        );
        if low.0 < high.0 {
            problems.push(format!("upward: {edge}"));
        } else if low.0 == high.0 && low.1 != high.1 {
            problems.push(format!("across groups kept apart: {edge}"));
        }
    }
    for circle in circles(modules.len(), &edges) {
        let names: Vec<&str> = circle.iter().map(|&i| modules[i].file.as_str()).collect();
        problems.push(format!("circle: {}", names.join(" -> ")));
    }
    problems
}

/// Whether the module `name` is the module `candidate` or one under it.
fn within(name: &str, candidate: &str) -> bool {
    name.strip_prefix(candidate)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

/// One `.rs` file of `src/` and the module it holds.
struct Module {
    /// As shown: `src/db/users.rs`.
    file: String,
    /// The module path: `db::users`; `lib` for the crate root, `main` for the binary.
    name: String,
    /// The module path as segments (empty for the crate root and the binary).
    path: Vec<String>,
    /// The text with comments, literals and `#[cfg(test)]` items taken out, as tokens.
    tokens: Vec<String>,
    /// Compiled only for tests (declared under `#[cfg(test)]`).
    test_only: bool,
    is_main: bool,
}

fn read_modules(src: &Path) -> Vec<Module> {
    let mut files = Vec::new();
    collect_files(src, &mut files);
    files.sort();
    let mut modules = Vec::new();
    let mut test_modules: Vec<Vec<String>> = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap_or(&file);
        let mut path: Vec<String> = relative
            .iter()
            .map(|part| part.to_string_lossy().into_owned())
            .collect();
        let last = path.pop().unwrap_or_default();
        let stem = last.trim_end_matches(".rs").to_string();
        let is_root = path.is_empty() && (stem == "lib" || stem == "main");
        if !is_root && stem != "mod" {
            path.push(stem.clone());
        }
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let (tokens, test_children, whole_file_test) = strip_tests(tokenize(&blank_out(&text)));
        for child in test_children {
            let mut p = path.clone();
            p.push(child);
            test_modules.push(p);
        }
        let name = if is_root {
            stem.clone()
        } else {
            path.join("::")
        };
        modules.push(Module {
            file: format!("src/{}", relative.display()),
            name,
            path,
            tokens,
            test_only: whole_file_test,
            is_main: is_root && stem == "main",
        });
    }
    for m in &mut modules {
        if test_modules.iter().any(|t| m.path.starts_with(t)) {
            m.test_only = true;
        }
    }
    modules
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Which file uses which: `(from, to)` with the first path that made the use, by file index.
fn uses(modules: &[Module]) -> BTreeMap<(usize, usize), String> {
    let scopes = Scopes::new(modules);
    let mut edges = BTreeMap::new();
    for (from, m) in modules.iter().enumerate() {
        if m.test_only {
            continue;
        }
        let t = &m.tokens;
        let mut add = |paths: Vec<UsePath>, is_use: bool, is_pub_use: bool| {
            for path in paths {
                let Some(first) = path.segments.first() else {
                    continue;
                };
                if !scopes.starts_path(from, first) {
                    continue; // another crate's path (`std::`, `rusqlite::`...)
                }
                let module = scopes.module_named(from, &path.segments);
                let to = match (&module, is_use && !path.glob) {
                    // Importing a module's name is no use yet; its uses in code are.
                    (Some(_), true) => continue,
                    (Some(target), false) => scopes.by_path.get(target.as_slice()).copied(),
                    (None, _) => scopes.file_of(from, &path.segments, 0),
                };
                let Some(to) = to else { continue };
                // A module's `pub use` of its own descendants is its public face, not a use.
                let descendant =
                    modules[to].path.len() > m.path.len() && modules[to].path.starts_with(&m.path);
                if to == from || modules[to].test_only || (is_pub_use && descendant) {
                    continue;
                }
                edges
                    .entry((from, to))
                    .or_insert_with(|| path.segments.join("::"));
            }
        };
        let mut i = 0;
        while i < t.len() {
            if t[i] == "use" {
                let is_pub_use = is_pub_before(t, i);
                let (paths, next) = use_tree(t, i + 1);
                add(paths, true, is_pub_use);
                i = next.max(i + 1);
                continue;
            }
            let starts_path = t.get(i + 1).is_some_and(|n| n == "::")
                && (i == 0 || (t[i - 1] != "::" && t[i - 1] != "$"))
                && scopes.starts_path(from, &t[i]);
            if starts_path {
                let (paths, next) = use_tree(t, i);
                add(paths, false, false);
                i = next.max(i + 1);
            } else {
                i += 1;
            }
        }
    }
    edges
}

/// Whether the `use` at `t[i]` is `pub use`, `pub(crate) use` or the like.
fn is_pub_before(t: &[String], i: usize) -> bool {
    match i.checked_sub(1).map(|j| t[j].as_str()) {
        Some("pub") => true,
        Some(")") => t[..i - 1]
            .iter()
            .rposition(|s| s == "(")
            .is_some_and(|open| open > 0 && t[open - 1] == "pub"),
        _ => false,
    }
}

/// One path of a `use` tree, or a path in code.
struct UsePath {
    segments: Vec<String>,
    /// The name given with `as`.
    alias: Option<String>,
    /// Ends in `::*`.
    glob: bool,
}

impl UsePath {
    /// The name this path brings into scope.
    fn name(&self) -> Option<&str> {
        if let Some(alias) = &self.alias {
            return Some(alias);
        }
        let mut names = self.segments.iter().rev();
        match names.next().map(String::as_str) {
            Some("self") => names.next().map(String::as_str),
            other => other,
        }
    }
}

/// The paths of a path or `use` tree starting at `t[i]`: `a::b::{c, d::e as f}` is `a::b::c`
/// and `a::b::d::e` (named `f`). Returns them and the index after the tree.
fn use_tree(t: &[String], mut i: usize) -> (Vec<UsePath>, usize) {
    let mut segments = Vec::new();
    let mut glob = false;
    while i < t.len() {
        let token = t[i].as_str();
        if token == "{" {
            i += 1;
            let mut out = Vec::new();
            while i < t.len() && t[i] != "}" {
                let (inner, next) = use_tree(t, i);
                for mut tail in inner {
                    let mut whole = segments.clone();
                    whole.append(&mut tail.segments);
                    tail.segments = whole;
                    out.push(tail);
                }
                i = next.max(i + 1);
                if t.get(i).is_some_and(|s| s == ",") {
                    i += 1;
                }
            }
            return (out, i + 1);
        }
        if token == "*" {
            glob = true;
            i += 1;
            break;
        }
        if !is_identifier(token) {
            break; // the end of the path: `<`, `(`, `;`...
        }
        segments.push(token.to_string());
        i += 1;
        if t.get(i).is_some_and(|s| s == "::") {
            i += 1;
        } else {
            break;
        }
    }
    let alias = (t.get(i).is_some_and(|s| s == "as"))
        .then(|| t.get(i + 1).cloned())
        .flatten();
    if alias.is_some() {
        i += 2;
    }
    let path = UsePath {
        segments,
        alias,
        glob,
    };
    (vec![path], i)
}

/// What each file's names stand for: the modules it imports by name, and the items it
/// re-exports from elsewhere (`pub use pool::Pool`).
struct Scopes<'a> {
    modules: &'a [Module],
    by_path: HashMap<&'a [String], usize>,
    /// Per file: a name imported by `use` → the module path it names.
    imported: Vec<HashMap<String, Vec<String>>>,
    /// Per file: a name re-exported by `pub use` → the path it was re-exported from.
    reexported: Vec<HashMap<String, Vec<String>>>,
}

impl<'a> Scopes<'a> {
    fn new(modules: &'a [Module]) -> Scopes<'a> {
        let by_path = modules
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.is_main)
            .map(|(i, m)| (m.path.as_slice(), i))
            .collect();
        let mut scopes = Scopes {
            modules,
            by_path,
            imported: vec![HashMap::new(); modules.len()],
            reexported: vec![HashMap::new(); modules.len()],
        };
        for (at, m) in modules.iter().enumerate() {
            let t = &m.tokens;
            for i in (0..t.len()).filter(|&i| t[i] == "use") {
                let is_pub = is_pub_before(t, i);
                for path in use_tree(t, i + 1).0 {
                    let Some(name) = path.name().map(str::to_string) else {
                        continue;
                    };
                    if path.glob || !scopes.starts_path(at, &path.segments[0]) {
                        continue;
                    }
                    if let Some(module) = scopes.module_named(at, &path.segments) {
                        scopes.imported[at].insert(name.clone(), module);
                    }
                    if is_pub {
                        scopes.reexported[at].insert(name, path.segments);
                    }
                }
            }
        }
        scopes
    }

    /// Whether a path starting with `first` names something of this crate, in file `at`.
    fn starts_path(&self, at: usize, first: &str) -> bool {
        let m = &self.modules[at];
        match first {
            "crate" | "super" | "self" => !m.is_main,
            "labgate" => m.is_main,
            name => {
                self.imported[at].contains_key(name)
                    || (!m.is_main && self.by_path.contains_key(child(&m.path, name).as_slice()))
            }
        }
    }

    /// Where `segments` start, as a module path, and the segments after that start.
    fn base<'s>(&self, at: usize, segments: &'s [String]) -> Option<(Vec<String>, &'s [String])> {
        let here = &self.modules[at].path;
        let (first, mut rest) = segments.split_first()?;
        let mut base = match first.as_str() {
            "crate" | "labgate" => Vec::new(),
            "self" | "super" => {
                rest = &segments[usize::from(first == "self")..];
                here.clone()
            }
            name => match self.imported[at].get(name) {
                Some(module) => module.clone(),
                None => child(here, name),
            },
        };
        while rest.first().is_some_and(|s| s == "super") {
            base.pop()?;
            rest = &rest[1..];
        }
        Some((base, rest))
    }

    /// The module path that `segments` name, when they name a module (`a::b`, `a::b::self`).
    fn module_named(&self, at: usize, segments: &[String]) -> Option<Vec<String>> {
        let (mut module, rest) = self.base(at, segments)?;
        for segment in rest {
            if segment == "self" {
                break;
            }
            module.push(segment.clone());
        }
        self.by_path
            .contains_key(module.as_slice())
            .then_some(module)
    }

    /// The file of the deepest module that `segments` name, following re-exports to the file
    /// that defines the item.
    fn file_of(&self, at: usize, segments: &[String], depth: usize) -> Option<usize> {
        let (mut module, rest) = self.base(at, segments)?;
        let mut file = *self.by_path.get(module.as_slice())?;
        for segment in rest {
            module.push(segment.clone());
            match self.by_path.get(module.as_slice()) {
                Some(&deeper) => file = deeper,
                None => {
                    if let Some(source) = self.reexported[file].get(segment) {
                        if depth < 8 {
                            return self.file_of(file, source, depth + 1).or(Some(file));
                        }
                    }
                    break;
                }
            }
        }
        Some(file)
    }
}

fn child(path: &[String], name: &str) -> Vec<String> {
    let mut p = path.to_vec();
    p.push(name.to_string());
    p
}

/// One circle through each set of files that use each other round a circle.
fn circles(count: usize, edges: &BTreeMap<(usize, usize), String>) -> Vec<Vec<usize>> {
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); count];
    for &(from, to) in edges.keys() {
        next[from].push(to);
    }
    let mut found = Vec::new();
    let mut seen_in_circle = vec![false; count];
    for start in 0..count {
        if seen_in_circle[start] {
            continue;
        }
        // The shortest way from `start` back to itself, if there is one.
        let mut came_from: Vec<Option<usize>> = vec![None; count];
        let mut queue = std::collections::VecDeque::from([start]);
        let mut closed = None;
        while let Some(at) = queue.pop_front() {
            for &to in &next[at] {
                if to == start {
                    closed = Some(at);
                    break;
                }
                if came_from[to].is_none() {
                    came_from[to] = Some(at);
                    queue.push_back(to);
                }
            }
            if closed.is_some() {
                break;
            }
        }
        let Some(mut at) = closed else { continue };
        let mut circle = vec![start];
        while at != start {
            circle.push(at);
            at = came_from[at].unwrap_or(start);
        }
        circle.push(start);
        circle.reverse();
        for &i in &circle {
            seen_in_circle[i] = true;
        }
        found.push(circle);
    }
    found
}

/// The text with comments, string, byte-string and character literals replaced by spaces.
fn blank_out(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        let start = i;
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (i == 0 || !ident(c[i - 1]) || (c[i - 1] == 'b' && (i < 2 || !ident(c[i - 2]))))
            && matches!(c.get(i + 1), Some('"') | Some('#'))
            && {
                let hashes = c[i + 1..].iter().take_while(|&&ch| ch == '#').count();
                c.get(i + 1 + hashes) == Some(&'"')
            }
        {
            let hashes = c[i + 1..].iter().take_while(|&&ch| ch == '#').count();
            i += 2 + hashes;
            while i < c.len() {
                if c[i] == '"'
                    && c[i + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&ch| ch == '#')
                        .count()
                        == hashes
                {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c[i] == '\'' && c.get(i + 1) == Some(&'\\') {
            i += 2;
            while i < c.len() && c[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if c[i] == '\'' && c.get(i + 2) == Some(&'\'') {
            i += 3;
        } else {
            out.push(c[i]);
            i += 1;
            continue;
        }
        // Keep the lines where they were, for anyone reading the tokens.
        let end = i.min(c.len());
        out.extend(
            c[start..end]
                .iter()
                .map(|&ch| if ch == '\n' { '\n' } else { ' ' }),
        );
    }
    out
}

fn is_identifier(token: &str) -> bool {
    token.starts_with(|ch: char| ch.is_alphabetic() || ch == '_')
}

/// Identifiers, `::`, and every other character that is not white space, one token each.
fn tokenize(text: &str) -> Vec<String> {
    let c: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if c[i].is_whitespace() {
            i += 1;
        } else if c[i].is_alphanumeric() || c[i] == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            tokens.push(c[start..i].iter().collect());
        } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
            tokens.push("::".to_string());
            i += 2;
        } else {
            tokens.push(c[i].to_string());
            i += 1;
        }
    }
    tokens
}

/// The tokens without the items under `#[cfg(test)]`; also the child modules declared under
/// it (`#[cfg(test)] mod props;`), and whether the file says `#![cfg(test)]` of itself.
fn strip_tests(t: Vec<String>) -> (Vec<String>, Vec<String>, bool) {
    const OUTER: [&str; 7] = ["#", "[", "cfg", "(", "test", ")", "]"];
    const INNER: [&str; 8] = ["#", "!", "[", "cfg", "(", "test", ")", "]"];
    let at = |i: usize, pattern: &[&str]| {
        t.len() >= i + pattern.len() && pattern.iter().zip(&t[i..]).all(|(p, s)| p == s)
    };
    let whole_file = (0..t.len()).any(|i| at(i, &INNER));
    let mut kept = Vec::with_capacity(t.len());
    let mut test_children = Vec::new();
    let mut i = 0;
    while i < t.len() {
        if !at(i, &OUTER) {
            kept.push(t[i].clone());
            i += 1;
            continue;
        }
        i += OUTER.len();
        // Further attributes of the same item.
        while at(i, &["#", "["]) {
            i = after_group(&t, i + 1);
        }
        let item_start = i;
        // The item ends at its `;` or at the end of its first `{ ... }` block.
        let mut depth = 0usize;
        while i < t.len() {
            match t[i].as_str() {
                "(" | "[" => depth += 1,
                ")" | "]" => depth = depth.saturating_sub(1),
                ";" if depth == 0 => {
                    i += 1;
                    break;
                }
                "{" if depth == 0 => {
                    i = after_group(&t, i);
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        let item: Vec<&str> = t[item_start..i.min(t.len())]
            .iter()
            .map(String::as_str)
            .collect();
        let item = match item.first() {
            Some(&"pub") => &item[1..],
            _ => &item[..],
        };
        if let ["mod", name, ";"] = item {
            test_children.push(name.to_string());
        }
    }
    (kept, test_children, whole_file)
}

/// The index after the bracket group opening at `t[open]` (`(`, `[` or `{`), nested groups
/// included.
fn after_group(t: &[String], open: usize) -> usize {
    let mut depth = 0usize;
    let mut i = open;
    while i < t.len() {
        match t[i].as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// The check itself must be able to fail: a small tree with a circle, an upward use and a use
/// across groups kept apart, next to what it must not count: tests, comments, strings, and a
/// re-export that a sibling uses.
#[test]
fn the_check_finds_circles_upward_uses_and_uses_across_groups() {
    let dir = std::env::temp_dir().join(format!("labgate-layers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let write = |path: &str, text: &str| {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().expect("a folder")).expect("create the folder");
        std::fs::write(file, text).expect("write a file");
    };
    write(
        "lib.rs",
        "pub mod low; pub mod high; pub mod left; pub mod right;\n",
    );
    write(
        "low/mod.rs",
        "pub mod deep;\npub mod other;\npub use deep::g as gee;\n\
         // crate::high::X in a comment is no use\n\
         pub const S: &str = \"crate::high::X in a string is no use either\";\n\
         #[cfg(test)]\nmod tests { use crate::high::X; }\n\
         #[cfg(test)]\nmod props;\n\
         pub fn f() -> char { let _c = '{'; deep::g() }\n",
    );
    write("low/deep.rs", "pub fn g() -> char { 'x' }\n");
    write("low/other.rs", "pub fn o() -> char { super::gee() }\n");
    write("low/props.rs", "use crate::high::X;\n");
    write(
        "high.rs",
        "use crate::{low::{self, deep}, right};\npub struct X;\n\
         pub fn h() { right::r(); low::f(); deep::g(); }\n",
    );
    write("left.rs", "pub fn l() { super::right::r() }\n");
    write("right.rs", "pub fn r() { crate::left::l() }\n");
    let clean = [
        ("low", "the bottom"),
        ("left | right", "two apart"),
        ("high lib", "the top"),
    ];
    let problems = check(&dir, &clean);
    let expected = [
        "across groups kept apart: src/left.rs uses src/right.rs (`super::right::r`)",
        "across groups kept apart: src/right.rs uses src/left.rs (`crate::left::l`)",
        "circle: src/left.rs -> src/right.rs -> src/left.rs",
    ];
    assert_eq!(problems, expected);
    // `high` below `right`: its use of `right` points upward.
    let upside_down = [
        ("low", "the bottom"),
        ("high", "now in the middle"),
        ("left right lib", "the top"),
    ];
    let problems = check(&dir, &upside_down);
    assert_eq!(
        problems,
        [
            "upward: src/high.rs uses src/right.rs (`right::r`)",
            "circle: src/left.rs -> src/right.rs -> src/left.rs",
        ]
    );
    // A file in no layer, and a layer name that matches nothing, are reported too.
    let problems = check(&dir, &[("low high left right nothing", "")]);
    assert_eq!(
        problems,
        [
            "LAYERS names `nothing`, which is no module of src/",
            "src/lib.rs (`lib`) is in no layer: add it to LAYERS",
            "circle: src/left.rs -> src/right.rs -> src/left.rs",
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
