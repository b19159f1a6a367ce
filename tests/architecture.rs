//! Architecture check: no module imports a module that imports it back.
//!
//! Reads `src/**/*.rs` (std only, no compiler), follows the module tree from
//! `src/lib.rs`, and collects every reference to another module of the crate: `use`
//! items (groups, nested and multi-line groups, `pub use`, `self`/`super`/`crate`
//! prefixes, paths relative to a child module) and paths in code
//! (`crate::presence::merge(…)`, `super::xml::Step`). Comments, doc comments, strings
//! (raw ones included), `#[cfg(test)]` items (and their files' submodules) and `tests.rs`
//! files are ignored.
//!
//! Two graphs, each of which must be acyclic:
//! - **top level**: the modules declared in `src/lib.rs` (`sip`, `proxy`, `endpoint`, …,
//!   and any new one);
//! - **one level down**: inside each top-level module, its child modules (files or
//!   inline `mod`s: `sip::typed`, `sip::uri`, …). A name reached through the parent
//!   (`super::HeaderName`, `crate::sip::Method`) counts as an edge to the child it is
//!   re-exported from. The parent's own items (`mod.rs`, the facade) may use its
//!   children and be used by them — that is how a Rust module is built — so edges
//!   to and from the parent are listed but do not form cycles.
//!
//! `cargo test --test architecture -- --nocapture` (or `scripts/module-cycles`)
//! prints both edge lists; a failure prints each cycle (`endpoint -> proxy ->
//! endpoint`) with the `file:line` of every edge inside it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::Path;

// =====================================================================================
// the checks on this crate
// =====================================================================================

fn this_crate() -> Analysis {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    read_tree(&src, &src, &mut files);
    analyze(&files)
}

fn read_tree(root: &Path, dir: &Path, files: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            read_tree(root, &path, files);
        } else if path.extension().is_some_and(|x| x == "rs") {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            files.insert(rel, text);
        }
    }
}

#[test]
fn every_source_file_is_in_the_module_tree() {
    let a = this_crate();
    assert!(
        a.unreached.is_empty(),
        "files under src/ that the module scan did not reach from src/lib.rs (a `#[path]`, \
         or a parsing gap in tests/architecture.rs): {:?}",
        a.unreached
    );
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let a = this_crate();
    println!("{}", a.top.render("top-level module graph"));
    let report = a.top.cycle_report();
    assert!(
        report.is_empty(),
        "import cycles between top-level modules of src/ (edge: file:line):\n{report}"
    );
}

#[test]
fn no_import_cycle_between_sibling_submodules() {
    let a = this_crate();
    let mut report = String::new();
    for (top, g) in &a.inner {
        println!("{}", g.render(&format!("inside `{top}`")));
        report.push_str(&g.cycle_report());
    }
    assert!(
        report.is_empty(),
        "import cycles between sibling submodules (edge: file:line):\n{report}"
    );
}

// =====================================================================================
// graphs
// =====================================================================================

/// A directed graph of module names with, per edge, where it comes from.
#[derive(Debug, Default)]
struct Graph {
    nodes: BTreeSet<String>,
    /// (from, to) → `file:line` of each reference (first few).
    edges: BTreeMap<(String, String), Vec<String>>,
    /// Edges to or from a parent module's own file (listed, not part of cycles).
    vertical: BTreeMap<(String, String), Vec<String>>,
}

const MAX_EVIDENCE: usize = 4;

impl Graph {
    fn add(map: &mut BTreeMap<(String, String), Vec<String>>, from: &str, to: &str, at: String) {
        let ev = map.entry((from.to_string(), to.to_string())).or_default();
        if ev.len() < MAX_EVIDENCE && !ev.contains(&at) {
            ev.push(at);
        }
    }

    fn edge(&mut self, from: &str, to: &str, at: String) {
        Self::add(&mut self.edges, from, to, at);
    }

    fn successors(&self, n: &str) -> Vec<&str> {
        self.edges
            .keys()
            .filter(|(f, _)| f == n)
            .map(|(_, t)| t.as_str())
            .collect()
    }

    /// Strongly connected components with more than one node (Tarjan).
    fn cyclic_components(&self) -> Vec<Vec<String>> {
        struct St<'a> {
            g: &'a Graph,
            index: BTreeMap<&'a str, usize>,
            low: BTreeMap<&'a str, usize>,
            stack: Vec<&'a str>,
            on_stack: BTreeSet<&'a str>,
            next: usize,
            out: Vec<Vec<String>>,
        }
        fn visit<'a>(st: &mut St<'a>, v: &'a str) {
            st.index.insert(v, st.next);
            st.low.insert(v, st.next);
            st.next += 1;
            st.stack.push(v);
            st.on_stack.insert(v);
            for w in st.g.successors(v) {
                if !st.index.contains_key(w) {
                    visit(st, w);
                    let lw = st.low[w];
                    let lv = st.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if st.on_stack.contains(w) {
                    let iw = st.index[w];
                    let lv = st.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if st.low[v] == st.index[v] {
                let mut comp = Vec::new();
                loop {
                    let w = st.stack.pop().unwrap();
                    st.on_stack.remove(w);
                    comp.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    st.out.push(comp);
                }
            }
        }
        let mut st = St {
            g: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            next: 0,
            out: Vec::new(),
        };
        for n in &self.nodes {
            if !st.index.contains_key(n.as_str()) {
                visit(&mut st, n);
            }
        }
        st.out.sort();
        st.out
    }

    /// A shortest cycle through `start` inside `comp`: `[start, …, start]`.
    fn cycle_through(&self, start: &str, comp: &BTreeSet<&str>) -> Vec<String> {
        let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(v) = queue.pop_front() {
            for w in self.successors(v) {
                if w == start {
                    let mut back = vec![v];
                    while let Some(p) = prev.get(back.last().unwrap()) {
                        back.push(p);
                    }
                    // back = [v, …, start]
                    let mut path: Vec<String> = back.iter().rev().map(|s| s.to_string()).collect();
                    path.push(start.to_string());
                    return path;
                }
                if comp.contains(w) && !prev.contains_key(w) {
                    prev.insert(w, v);
                    queue.push_back(w);
                }
            }
        }
        Vec::new()
    }

    /// Every cycle — a shortest one per strongly connected component, and every
    /// pair of modules that import each other — with the `file:line` of each edge
    /// inside the component; "" when there is none.
    fn cycle_report(&self) -> String {
        let mut out = String::new();
        for comp in self.cyclic_components() {
            let set: BTreeSet<&str> = comp.iter().map(String::as_str).collect();
            let shortest = self.cycle_through(&comp[0], &set);
            let mut cycles = vec![shortest.join(" -> ")];
            for (f, t) in self.edges.keys() {
                if f < t
                    && set.contains(f.as_str())
                    && self.edges.contains_key(&(t.clone(), f.clone()))
                {
                    let pair = format!("{f} -> {t} -> {f}");
                    if !cycles.contains(&pair) {
                        cycles.push(pair);
                    }
                }
            }
            for c in cycles {
                let _ = writeln!(out, "  cycle: {c}");
            }
            for ((f, t), ev) in &self.edges {
                if set.contains(f.as_str()) && set.contains(t.as_str()) {
                    let _ = writeln!(out, "    {f} -> {t}   ({})", ev.join(", "));
                }
            }
        }
        out
    }

    /// The edge list, one line per module: `a -> b, c`.
    fn render(&self, title: &str) -> String {
        let mut out = format!("{title}:\n");
        for n in &self.nodes {
            let to: Vec<&str> = self.successors(n);
            let _ = writeln!(
                out,
                "  {n} -> {}",
                if to.is_empty() {
                    "(nothing)".to_string()
                } else {
                    to.join(", ")
                }
            );
        }
        if !self.vertical.is_empty() {
            let _ = writeln!(out, "  via the parent module's own file (not cycles):");
            for (f, t) in self.vertical.keys() {
                let _ = writeln!(out, "    {f} -> {t}");
            }
        }
        out
    }
}

// =====================================================================================
// analysis: module tree, references, graphs
// =====================================================================================

#[derive(Debug, Default)]
struct Analysis {
    top: Graph,
    /// Per top-level module with children: the graph of its children.
    inner: BTreeMap<String, Graph>,
    /// `.rs` files not reached from lib.rs (not counting main.rs, `tests.rs` and
    /// `#[cfg(test)]` module files).
    unreached: Vec<String>,
}

/// Analyse a crate given as `path relative to src/` → text (`lib.rs` is the root).
fn analyze(files: &BTreeMap<String, String>) -> Analysis {
    // module path → children; collected scans of reached files
    let mut children: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
    let mut scans: Vec<(String, Scan)> = Vec::new();
    let mut reached: BTreeSet<String> = BTreeSet::new();
    let mut test_files: BTreeSet<String> = BTreeSet::new();
    // (file, module path of the file)
    let mut queue: VecDeque<(String, Vec<String>)> = VecDeque::from([("lib.rs".into(), vec![])]);
    while let Some((file, module)) = queue.pop_front() {
        let Some(text) = files.get(&file) else {
            continue;
        };
        reached.insert(file.clone());
        if Path::new(&file)
            .file_name()
            .is_some_and(|n| n == "tests.rs")
        {
            continue;
        }
        let scan = scan(&lex(text), &module);
        // directory that holds this file's child module files
        let own_dir = {
            let p = Path::new(&file);
            let parent = p
                .parent()
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default();
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            if matches!(stem.as_str(), "mod" | "lib" | "main") {
                parent
            } else if parent.is_empty() {
                stem
            } else {
                format!("{parent}/{stem}")
            }
        };
        children.entry(module.clone()).or_default();
        for m in &scan.inline_mods {
            children
                .entry(m[..m.len() - 1].to_vec())
                .or_default()
                .insert(m.last().unwrap().clone());
            children.entry(m.clone()).or_default();
        }
        for d in &scan.mod_decls {
            let rel: Vec<&str> = d.module[module.len()..]
                .iter()
                .map(String::as_str)
                .collect();
            let mut dir = own_dir.clone();
            for r in &rel {
                dir = if dir.is_empty() {
                    r.to_string()
                } else {
                    format!("{dir}/{r}")
                };
            }
            let join = |f: String| {
                if dir.is_empty() {
                    f
                } else {
                    format!("{dir}/{f}")
                }
            };
            let a = join(format!("{}.rs", d.name));
            let b = join(format!("{}/mod.rs", d.name));
            let target = if files.contains_key(&a) { a } else { b };
            if d.test {
                test_files.insert(target);
                continue;
            }
            children
                .entry(d.module.clone())
                .or_default()
                .insert(d.name.clone());
            let mut child = d.module.clone();
            child.push(d.name.clone());
            queue.push_back((target, child));
        }
        scans.push((file, scan));
    }
    // a test module's own directory (`x/tests/` of `x/tests.rs` or `x/tests/mod.rs`)
    // holds its submodules: test code too
    let test_dirs: Vec<String> = test_files
        .iter()
        .map(|t| match t.strip_suffix("mod.rs") {
            Some(dir) => dir.to_string(),
            None => format!("{}/", t.trim_end_matches(".rs")),
        })
        .collect();
    let unreached = files
        .keys()
        .filter(|f| {
            !reached.contains(*f)
                && !test_files.contains(*f)
                && !test_dirs.iter().any(|d| f.starts_with(d.as_str()))
                && f.as_str() != "main.rs"
                && !f.starts_with("bin/")
                && Path::new(f).file_name().is_none_or(|n| n != "tests.rs")
        })
        .cloned()
        .collect();

    let is_module = |p: &[String]| children.contains_key(p);
    let tops: BTreeSet<String> = children.get(&Vec::new()).cloned().unwrap_or_default();

    // Names a top-level module's own file imports from its children (re-exports and
    // private imports alike: both are reachable as `super::Name` / `crate::top::Name`).
    let mut facade: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (_, s) in &scans {
        for r in &s.refs {
            if r.module.len() != 1 || !r.in_use || r.glob {
                continue;
            }
            if let Some(abs) = resolve(&r.module, &r.path, true, &is_module)
                && abs.len() >= 3
                && abs[0] == r.module[0]
                && is_module(&abs[..2])
            {
                let name = r
                    .alias
                    .clone()
                    .unwrap_or_else(|| abs.last().unwrap().clone());
                facade
                    .entry(abs[0].clone())
                    .or_default()
                    .insert(name, abs[1].clone());
            }
        }
    }
    // (top, child-or-None) of an absolute path
    let level2 = |abs: &[String]| -> Option<String> {
        let c = abs.get(1)?;
        if is_module(&abs[..2]) {
            Some(c.clone())
        } else {
            facade.get(&abs[0]).and_then(|m| m.get(c)).cloned()
        }
    };

    let mut a = Analysis {
        unreached,
        ..Analysis::default()
    };
    a.top.nodes = tops.clone();
    for t in &tops {
        let kids = &children[&vec![t.clone()]];
        if !kids.is_empty() {
            let g = a.inner.entry(t.clone()).or_default();
            g.nodes = kids.iter().map(|k| format!("{t}::{k}")).collect();
        }
    }
    for (file, s) in &scans {
        for r in &s.refs {
            let Some(abs) = resolve(&r.module, &r.path, r.in_use, &is_module) else {
                continue;
            };
            let (Some(from_top), Some(to_top)) = (r.module.first(), abs.first()) else {
                continue;
            };
            if !tops.contains(to_top) {
                continue;
            }
            let at = format!("src/{file}:{}", r.line);
            if from_top != to_top {
                a.top.edge(from_top, to_top, at);
                continue;
            }
            let from = r.module.get(1).cloned();
            let to = level2(&abs);
            let name = |c: &Option<String>| match c {
                Some(c) => format!("{from_top}::{c}"),
                None => from_top.clone(),
            };
            if from == to {
                continue;
            }
            let g = a.inner.entry(from_top.clone()).or_default();
            if from.is_some() && to.is_some() {
                g.edge(&name(&from), &name(&to), at);
            } else {
                Graph::add(&mut g.vertical, &name(&from), &name(&to), at);
            }
        }
    }
    a
}

/// The absolute module path (without `crate`) a reference names, or None when it
/// leaves the crate (std, dependencies) or cannot be resolved.
fn resolve(
    module: &[String],
    path: &[String],
    in_use: bool,
    is_module: &dyn Fn(&[String]) -> bool,
) -> Option<Vec<String>> {
    let first = path.first()?;
    let abs: Vec<String> = match first.as_str() {
        "crate" => path[1..].to_vec(),
        "super" | "self" => {
            let ups = path.iter().take_while(|s| *s == "super").count();
            let base = module.len().checked_sub(ups)?;
            let rest = if ups == 0 { &path[1..] } else { &path[ups..] };
            let mut v = module[..base].to_vec();
            v.extend_from_slice(rest);
            v
        }
        _ if in_use => {
            // 2018+: `use child::X` names a module in scope (a child of this one)
            let mut v = module.to_vec();
            v.push(first.clone());
            if !is_module(&v) {
                return None;
            }
            v.extend_from_slice(&path[1..]);
            v
        }
        _ => return None,
    };
    (!abs.is_empty()).then_some(abs)
}

// =====================================================================================
// scanning one file
// =====================================================================================

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

/// Tokens of Rust source, without comments, strings, chars and numbers' meaning.
fn lex(src: &str) -> Vec<Token> {
    let c: Vec<char> = src.chars().collect();
    let n = c.len();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let is_id_start = |ch: char| ch == '_' || ch.is_alphabetic();
    let is_id = |ch: char| ch == '_' || ch.is_alphanumeric();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    // skip a quoted string starting at c[i] == '"' (escapes honoured)
    let skip_str = |mut i: usize, line: &mut usize| -> usize {
        i += 1;
        while i < n && c[i] != '"' {
            if c[i] == '\\' {
                i += 1;
            }
            if at(i) == '\n' {
                *line += 1;
            }
            i += 1;
        }
        i + 1
    };
    // skip a raw string: c[i] is the first '#' or '"' after the `r`
    let skip_raw = |mut i: usize, line: &mut usize| -> usize {
        let mut hashes = 0;
        while at(i) == '#' {
            hashes += 1;
            i += 1;
        }
        i += 1; // opening quote
        while i < n {
            if c[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#') {
                return i + 1 + hashes;
            }
            if c[i] == '\n' {
                *line += 1;
            }
            i += 1;
        }
        n
    };
    // a raw string starts at c[i] (after the r): #* "
    let raw_starts = |i: usize| {
        let mut j = i;
        while at(j) == '#' {
            j += 1;
        }
        at(j) == '"'
    };
    while i < n {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < n && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < n {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_str(i, &mut line);
        } else if ch == '\'' {
            if at(i + 1) == '\\' {
                // '\n', '\'', '\u{..}'
                i += 3;
                while i < n && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3; // 'x'
            } else {
                i += 1; // lifetime or label: the name lexes as an identifier
            }
        } else if ch == ':' && at(i + 1) == ':' {
            out.push(Token {
                tok: Tok::PathSep,
                line,
            });
            i += 2;
        } else if ch.is_ascii_digit() {
            while i < n && is_id(c[i]) {
                i += 1;
            }
        } else if ch == '$' && is_id_start(at(i + 1)) {
            // macro metavariable or `$crate`: never a path of this crate's modules
            i += 1;
            while i < n && is_id(c[i]) {
                i += 1;
            }
        } else if is_id_start(ch) {
            // literal prefixes: r"…" r#"…"# b"…" br"…" b'…' c"…" cr"…"
            let two = (ch, at(i + 1));
            if matches!(ch, 'r') && raw_starts(i + 1) {
                i = skip_raw(i + 1, &mut line);
            } else if matches!(two, ('b', 'r') | ('c', 'r')) && raw_starts(i + 2) {
                i = skip_raw(i + 2, &mut line);
            } else if matches!(two, ('b', '"') | ('c', '"')) {
                i = skip_str(i + 1, &mut line);
            } else if two == ('b', '\'') {
                i += 2;
                if at(i) == '\\' {
                    i += 2;
                }
                while i < n && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else {
                if two == ('r', '#') {
                    i += 2; // raw identifier r#name
                }
                let s = i;
                while i < n && is_id(c[i]) {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Ident(c[s..i].iter().collect()),
                    line,
                });
            }
        } else {
            out.push(Token {
                tok: Tok::Punct(ch),
                line,
            });
            i += 1;
        }
    }
    out
}

/// A reference to a path of this crate, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ref {
    /// Module the reference is written in (file module + inline `mod`s).
    module: Vec<String>,
    /// Path segments as written (`super`, `crate`, `self` included).
    path: Vec<String>,
    /// In a `use` item (a path there may start with a child module's name).
    in_use: bool,
    /// `use a::*`
    glob: bool,
    /// `use a::B as C` → C
    alias: Option<String>,
    line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModDecl {
    /// Module the declaration is in.
    module: Vec<String>,
    name: String,
    /// Declared under `#[cfg(test)]`.
    test: bool,
}

#[derive(Debug, Default)]
struct Scan {
    refs: Vec<Ref>,
    /// `mod x;` declarations (their file is elsewhere).
    mod_decls: Vec<ModDecl>,
    /// Paths of inline `mod x { … }` modules (not under `#[cfg(test)]`).
    inline_mods: Vec<Vec<String>>,
}

fn ident(t: Option<&Token>) -> Option<&str> {
    match t.map(|t| &t.tok) {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

fn punct(t: Option<&Token>, ch: char) -> bool {
    matches!(t.map(|t| &t.tok), Some(Tok::Punct(c)) if *c == ch)
}

fn path_sep(t: Option<&Token>) -> bool {
    matches!(t.map(|t| &t.tok), Some(Tok::PathSep))
}

/// Index just past the bracket that closes the one at `i` (`(`, `[` or `{`).
fn skip_group(toks: &[Token], i: usize) -> usize {
    let mut depth = 0i32;
    let mut j = i;
    while j < toks.len() {
        match toks[j].tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    toks.len()
}

/// Index just past the item starting at `i`: its `;` or its `{ … }` body, at
/// bracket depth 0.
fn skip_item(toks: &[Token], i: usize) -> usize {
    let mut j = i;
    while j < toks.len() {
        match toks[j].tok {
            Tok::Punct(';') => return j + 1,
            Tok::Punct('{') => return skip_group(toks, j),
            Tok::Punct('(' | '[') => j = skip_group(toks, j),
            _ => j += 1,
        }
    }
    toks.len()
}

/// Whether the attribute tokens (inside `#[…]`) are `cfg(test)` or
/// `cfg(all(test, …))`.
fn is_cfg_test(attr: &[Token]) -> bool {
    let words: Vec<&Tok> = attr.iter().map(|t| &t.tok).collect();
    let id = |s: &str| Tok::Ident(s.to_string());
    match words.as_slice() {
        [c, Tok::Punct('('), t, Tok::Punct(')')] => **c == id("cfg") && **t == id("test"),
        [c, Tok::Punct('('), all, Tok::Punct('('), rest @ ..] => {
            **c == id("cfg")
                && **all == id("all")
                && rest.iter().any(|t| **t == id("test"))
                && !rest.iter().any(|t| **t == id("not"))
        }
        _ => false,
    }
}

/// Parse one use tree at `i` under `prefix`, pushing its leaves.
fn use_tree(toks: &[Token], i: &mut usize, prefix: &[String], leaves: &mut Vec<Ref>, proto: &Ref) {
    let mut path = prefix.to_vec();
    if path_sep(toks.get(*i)) {
        *i += 1; // leading `::` (an external crate)
        path.push("::".into());
    }
    loop {
        if let Some(s) = ident(toks.get(*i)) {
            path.push(s.to_string());
            *i += 1;
            if path_sep(toks.get(*i)) {
                *i += 1;
                continue;
            }
            break;
        } else if punct(toks.get(*i), '{') {
            *i += 1;
            while *i < toks.len() && !punct(toks.get(*i), '}') {
                let before = *i;
                use_tree(toks, i, &path, leaves, proto);
                if punct(toks.get(*i), ',') {
                    *i += 1;
                }
                if *i == before {
                    *i += 1; // malformed: make progress
                }
            }
            *i += 1;
            return;
        } else if punct(toks.get(*i), '*') {
            *i += 1;
            leaves.push(Ref {
                path,
                glob: true,
                ..proto.clone()
            });
            return;
        } else {
            break;
        }
    }
    let mut alias = None;
    if ident(toks.get(*i)) == Some("as") {
        alias = ident(toks.get(*i + 1)).map(String::from);
        *i += 2;
    }
    if path.last().is_some_and(|s| s == "self") {
        path.pop();
    }
    if !path.is_empty() {
        leaves.push(Ref {
            path,
            alias,
            ..proto.clone()
        });
    }
}

/// References and module declarations of one file whose module path is `module`.
fn scan(toks: &[Token], module: &[String]) -> Scan {
    let mut out = Scan::default();
    // inline modules: (name, brace depth outside it)
    let mut stack: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut test_item = false;
    let here = |stack: &[(String, usize)]| {
        let mut m = module.to_vec();
        m.extend(stack.iter().map(|(n, _)| n.clone()));
        m
    };
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        // attributes
        if punct(Some(t), '#') {
            let inner = punct(toks.get(i + 1), '!');
            let open = if inner { i + 2 } else { i + 1 };
            if punct(toks.get(open), '[') {
                let end = skip_group(toks, open);
                if is_cfg_test(&toks[open + 1..end.saturating_sub(1)]) {
                    if inner && depth == 0 && stack.is_empty() {
                        return Scan::default(); // #![cfg(test)]: the whole file
                    }
                    test_item = !inner;
                }
                i = end;
                continue;
            }
        }
        if test_item {
            test_item = false;
            // `#[cfg(test)] (pub) mod x;` names a file that is test code
            let mut j = i;
            if ident(toks.get(j)) == Some("pub") {
                j += 1;
                if punct(toks.get(j), '(') {
                    j = skip_group(toks, j);
                }
            }
            if ident(toks.get(j)) == Some("mod")
                && punct(toks.get(j + 2), ';')
                && let Some(name) = ident(toks.get(j + 1))
            {
                out.mod_decls.push(ModDecl {
                    module: here(&stack),
                    name: name.into(),
                    test: true,
                });
            }
            i = skip_item(toks, i);
            continue;
        }
        match &t.tok {
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                if stack.last().is_some_and(|(_, d)| *d == depth) {
                    stack.pop();
                }
                i += 1;
            }
            Tok::Ident(s) if s == "pub" && punct(toks.get(i + 1), '(') => {
                // visibility `pub(crate)`, `pub(in crate::a)`: not a reference
                i = skip_group(toks, i + 1);
            }
            Tok::Ident(s) if s == "mod" => {
                let Some(name) = ident(toks.get(i + 1)) else {
                    i += 1;
                    continue;
                };
                if punct(toks.get(i + 2), ';') {
                    out.mod_decls.push(ModDecl {
                        module: here(&stack),
                        name: name.into(),
                        test: false,
                    });
                    i += 3;
                } else if punct(toks.get(i + 2), '{') {
                    stack.push((name.to_string(), depth));
                    out.inline_mods.push(here(&stack));
                    depth += 1;
                    i += 3;
                } else {
                    i += 1;
                }
            }
            // `use` item (not the `use<'a>` precise-capturing bound)
            Tok::Ident(s) if s == "use" && !punct(toks.get(i + 1), '<') => {
                let proto = Ref {
                    module: here(&stack),
                    path: Vec::new(),
                    in_use: true,
                    glob: false,
                    alias: None,
                    line: t.line,
                };
                i += 1;
                use_tree(toks, &mut i, &[], &mut out.refs, &proto);
                while i < toks.len() && !punct(toks.get(i), ';') {
                    i += 1;
                }
            }
            // a path in code: crate::a::b, super::x, self::y
            Tok::Ident(s)
                if matches!(s.as_str(), "crate" | "super" | "self")
                    && path_sep(toks.get(i + 1))
                    && !(i > 0 && path_sep(toks.get(i - 1))) =>
            {
                let line = t.line;
                let mut path = vec![s.clone()];
                let mut j = i + 1;
                while path_sep(toks.get(j)) {
                    match ident(toks.get(j + 1)) {
                        Some(seg) => path.push(seg.to_string()),
                        None => break,
                    }
                    j += 2;
                }
                out.refs.push(Ref {
                    module: here(&stack),
                    path,
                    in_use: false,
                    glob: false,
                    alias: None,
                    line,
                });
                i = j;
            }
            _ => i += 1,
        }
    }
    out
}

// =====================================================================================
// the scanner's own tests
// =====================================================================================

mod scanner {
    use super::*;

    fn krate(files: &[(&str, &str)]) -> Analysis {
        analyze(
            &files
                .iter()
                .map(|(p, t)| (p.to_string(), t.to_string()))
                .collect(),
        )
    }

    fn top_edges(a: &Analysis) -> Vec<String> {
        a.top
            .edges
            .keys()
            .map(|(f, t)| format!("{f}->{t}"))
            .collect()
    }

    fn paths(src: &str) -> Vec<String> {
        scan(&lex(src), &["m".to_string()])
            .refs
            .iter()
            .map(|r| r.path.join("::"))
            .collect()
    }

    const LIB3: &str = "pub mod a;\npub mod b;\npub mod c;\n";

    #[test]
    fn finds_a_cycle_and_prints_it() {
        let a = krate(&[
            ("lib.rs", LIB3),
            ("a.rs", "use crate::b::B;\n"),
            ("b.rs", "pub fn f() { crate::c::g() }\n"),
            ("c.rs", "use crate::{a::A};\n"),
        ]);
        assert_eq!(top_edges(&a), ["a->b", "b->c", "c->a"]);
        let report = a.top.cycle_report();
        assert!(report.contains("cycle: a -> b -> c -> a"), "{report}");
        assert!(report.contains("a -> b   (src/a.rs:1)"), "{report}");
    }

    #[test]
    fn a_dag_passes() {
        let a = krate(&[
            ("lib.rs", LIB3),
            ("a.rs", "use crate::b::B;\nuse crate::c::C;\n"),
            ("b.rs", "use crate::c::C;\n"),
            ("c.rs", "use std::fmt;\n"),
        ]);
        assert_eq!(top_edges(&a), ["a->b", "a->c", "b->c"]);
        assert_eq!(a.top.cycle_report(), "");
        assert!(a.unreached.is_empty());
    }

    #[test]
    fn cfg_test_code_and_tests_files_are_ignored() {
        let a = krate(&[
            ("lib.rs", "pub mod a;\npub mod b;\n"),
            (
                "a.rs",
                "use crate::b::B;\n#[cfg(test)]\nmod tests {\n    use crate::b::X;\n    fn f() { crate::b::y(); }\n}\n",
            ),
            (
                "b/mod.rs",
                "#[cfg(test)]\n#[allow(unused)]\nuse crate::a::A;\n#[cfg(test)]\nmod tests;\n#[cfg(test)]\nfn helper() -> u8 { crate::a::x() }\npub fn ok() {}\n",
            ),
            ("b/tests.rs", "use crate::a::A;\nmod more;\n"),
            ("b/tests/more.rs", "use crate::a::A;\n"),
        ]);
        assert_eq!(top_edges(&a), ["a->b"]);
        assert!(a.unreached.is_empty(), "{:?}", a.unreached);
    }

    #[test]
    fn use_groups_nested_and_multi_line() {
        let p = paths(
            "use crate::{\n    a::X,\n    b::{self, c::{Y, Z as W}},\n    d::*,\n};\npub use super::e;\n",
        );
        assert_eq!(
            p,
            [
                "crate::a::X",
                "crate::b",
                "crate::b::c::Y",
                "crate::b::c::Z",
                "crate::d",
                "super::e"
            ]
        );
    }

    #[test]
    fn comments_strings_chars_and_lifetimes_are_not_paths() {
        let p = paths(concat!(
            "// use crate::a;\n",
            "/// see [`crate::b::X`]\n",
            "/* crate::c /* nested crate::d */ crate::e */\n",
            "fn f<'a>(x: &'a str) -> char {\n",
            "    let s = \"crate::f::g \\\" crate::h\";\n",
            "    let r = r#\"crate::i \"quoted\" \"#;\n",
            "    let b = b\"crate::j\"; let q = '\"'; let e = '\\'';\n",
            "    crate::real::path(s)\n",
            "}\n",
            "pub(crate) fn g() {}\npub(in crate::k) fn h() {}\n",
        ));
        assert_eq!(p, ["crate::real::path"]);
    }

    #[test]
    fn super_and_relative_paths_resolve() {
        let a = krate(&[
            ("lib.rs", "pub mod p;\npub mod q;\n"),
            (
                "p/mod.rs",
                "mod x;\nmod y;\npub use x::Thing;\nuse y::Other;\npub struct Own;\n",
            ),
            ("p/x.rs", "use super::y::Yy;\npub struct Thing;\n"),
            (
                "p/y.rs",
                "use super::{Thing, Own};\nfn f() { super::super::q::g(); }\nmod inner { fn h() { super::super::x::Thing; } }\n",
            ),
            ("q.rs", "pub fn g() {}\n"),
        ]);
        assert_eq!(top_edges(&a), ["p->q"]);
        let g = &a.inner["p"];
        let edges: Vec<_> = g.edges.keys().map(|(f, t)| format!("{f}->{t}")).collect();
        // p::y -> p::x through the re-export `Thing` and through `super::super::x`
        assert_eq!(edges, ["p::x->p::y", "p::y->p::x"]);
        let vertical: Vec<_> = g
            .vertical
            .keys()
            .map(|(f, t)| format!("{f}->{t}"))
            .collect();
        assert_eq!(vertical, ["p->p::x", "p->p::y", "p::y->p"]);
        let report = g.cycle_report();
        assert!(report.contains("cycle: p::x -> p::y -> p::x"), "{report}");
    }

    #[test]
    fn pub_use_of_another_module_is_an_edge() {
        let a = krate(&[
            ("lib.rs", "pub mod a;\npub mod b;\n"),
            ("a.rs", "pub use crate::b::B as Bee;\n"),
            ("b.rs", "pub struct B;\n"),
        ]);
        assert_eq!(top_edges(&a), ["a->b"]);
    }

    #[test]
    fn unreached_files_are_reported() {
        let a = krate(&[("lib.rs", "pub mod a;\n"), ("a.rs", ""), ("stray.rs", "")]);
        assert_eq!(a.unreached, ["stray.rs"]);
    }
}
