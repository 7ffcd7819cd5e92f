//! The library's module dependency graph, computed from its source: every
//! `crate::…`, `super::…`, `self::…` and child-module path (in `use`
//! declarations, expressions, macro arguments and serde's `with = "…"`
//! strings), resolved to the module it names. `#[cfg(test)]` items are left
//! out: tests may reach anywhere.
//!
//! What it checks (issue 21, docs/architecture.md "Module graph"):
//! - no cycle among the top-level modules, with each config section
//!   (`xdp::config`, `proxy::config`, …) counted as a node of its own;
//! - a section module imports neither the root `config` (the aggregator)
//!   nor an engine: only other sections and the leaf helpers;
//! - the root `config` names every section through its `config` module.
//!
//! `cargo test -p gateway-userspace --test module_graph -- --nocapture`
//! prints the graph and its strongly connected components.

#![forbid(unsafe_code)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// A module path below the crate root: `["proxy", "config", "route"]`.
type ModPath = Vec<String>;

/// Top-level helpers every module (sections included) may use; each must
/// stay a leaf (import nothing from the crate).
const HELPERS: &[&str] = &["clock", "duration", "net"];

// ---------------------------------------------------------------- tokens

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Sep,
    Punct(char),
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Whether a string literal is a path (`crate::duration::Span`), as serde's
/// `with`, `deserialize_with` and `default` attributes carry them.
fn looks_like_path(s: &str) -> bool {
    let mut parts = s.split("::");
    matches!(parts.next(), Some("crate" | "super" | "self"))
        && parts.clone().count() > 0
        && parts
            .all(|p| p.chars().next().is_some_and(is_ident_start) && p.chars().all(is_ident_char))
}

/// Rust source as identifiers, `::` and punctuation; comments, string,
/// byte-string and char literals dropped (except path-like strings, which
/// are tokenized as paths).
fn tokenize(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && c.get(i + 1) == Some(&'*') {
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
        } else if ch == '"' || ((ch == 'b' || ch == 'c') && c.get(i + 1) == Some(&'"')) {
            if ch != '"' {
                i += 1;
            }
            i += 1;
            let start = i;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            let s: String = c[start..i.min(c.len())].iter().collect();
            i += 1;
            if looks_like_path(&s) {
                out.extend(tokenize(&s));
            }
        } else if (ch == 'r' || ch == 'b' || ch == 'c') && {
            let mut j = i + 1;
            if ch != 'r' && c.get(j) == Some(&'r') {
                j += 1;
            } else if ch != 'r' {
                j = usize::MAX;
            }
            j != usize::MAX && (c.get(j) == Some(&'"') || c.get(j) == Some(&'#')) && {
                let mut k = j;
                while c.get(k) == Some(&'#') {
                    k += 1;
                }
                c.get(k) == Some(&'"')
            }
        } {
            // Raw string: r"…", r#"…"#, br#"…"#.
            while c[i] != '#' && c[i] != '"' {
                i += 1;
            }
            let mut hashes = 0;
            while c[i] == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1;
            'raw: while i < c.len() {
                if c[i] == '"' && (1..=hashes).all(|h| c.get(i + h) == Some(&'#')) {
                    i += 1 + hashes;
                    break 'raw;
                }
                i += 1;
            }
        } else if ch == '\'' {
            // A char literal ('a', '\n', '\u{..}') or a lifetime ('a).
            if c.get(i + 1) == Some(&'\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if is_ident_start(ch) {
            let start = i;
            while i < c.len() && is_ident_char(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            // `r#ident`
            if word == "r" && c.get(i) == Some(&'#') {
                i += 1;
                continue;
            }
            out.push(Tok::Ident(word));
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push(Tok::Sep);
            i += 2;
        } else {
            out.push(Tok::Punct(ch));
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------- paths

/// The paths of a path tree starting at `toks[i]` (just after a root
/// keyword and its `::`), each appended to `prefix`: `a::{b, c::d}` gives
/// `a::b` and `a::c::d`. Returns the index after the tree.
fn path_tree(toks: &[Tok], mut i: usize, prefix: ModPath, out: &mut Vec<ModPath>) -> usize {
    let mut path = prefix;
    loop {
        match toks.get(i) {
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    match toks.get(i) {
                        Some(Tok::Punct('}')) => return i + 1,
                        Some(Tok::Punct(',')) => i += 1,
                        None => return i,
                        _ => i = path_tree(toks, i, path.clone(), out),
                    }
                }
            }
            Some(Tok::Ident(w)) if w == "self" => {
                // `use a::{self, b}`
                out.push(path);
                return i + 1;
            }
            Some(Tok::Ident(w)) => {
                path.push(w.clone());
                i += 1;
                if toks.get(i) == Some(&Tok::Sep) {
                    i += 1;
                } else {
                    out.push(path);
                    return i;
                }
            }
            _ => {
                // `*`, `<` (turbofish) or the end: the path so far.
                out.push(path);
                return i;
            }
        }
    }
}

/// One source file's module and the paths it names.
struct Scanned {
    /// (module the reference is written in, absolute path it names).
    refs: Vec<(ModPath, ModPath)>,
    /// Inline modules (`mod x { … }`) outside tests.
    inline_mods: Vec<ModPath>,
    /// File modules declared `#[cfg(test)] mod x;`.
    test_children: Vec<ModPath>,
}

fn is_cfg_test(toks: &[Tok], i: usize) -> bool {
    // `# [ cfg ( test ) ]`
    let want = [
        Tok::Punct('#'),
        Tok::Punct('['),
        Tok::Ident("cfg".into()),
        Tok::Punct('('),
        Tok::Ident("test".into()),
        Tok::Punct(')'),
        Tok::Punct(']'),
    ];
    toks.len() >= i + want.len() && toks[i..i + want.len()] == want
}

/// The index just past the item starting at `i`: its `;` or the `}`
/// closing its first brace.
fn skip_item(toks: &[Tok], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < toks.len() {
        match &toks[i] {
            Tok::Punct('{') | Tok::Punct('(') | Tok::Punct('[') => depth += 1,
            Tok::Punct('}') | Tok::Punct(')') | Tok::Punct(']') => {
                depth = depth.saturating_sub(1);
                if depth == 0 && toks[i] == Tok::Punct('}') {
                    return i + 1;
                }
            }
            Tok::Punct(';') if depth == 0 => return i + 1,
            _ => {}
        }
        i += 1;
    }
    i
}

fn scan(module: &ModPath, src: &str, children: &BTreeSet<String>) -> Scanned {
    let toks = tokenize(src);
    let mut out = Scanned {
        refs: Vec::new(),
        inline_mods: Vec::new(),
        test_children: Vec::new(),
    };
    // (module path, brace depth at which its body closes)
    let mut stack: Vec<(ModPath, usize)> = vec![(module.clone(), usize::MAX)];
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let here = stack.last().expect("root").0.clone();
        if is_cfg_test(&toks, i) {
            let mut j = i + 7;
            // Further attributes and `pub`.
            while toks.get(j) == Some(&Tok::Punct('#')) {
                j = skip_item(&toks, j + 1);
            }
            if let (Some(Tok::Ident(kw)), Some(Tok::Ident(name)), Some(Tok::Punct(';'))) =
                (toks.get(j), toks.get(j + 1), toks.get(j + 2))
                && kw == "mod"
            {
                let mut p = here.clone();
                p.push(name.clone());
                out.test_children.push(p);
            }
            i = skip_item(&toks, j);
            continue;
        }
        match &toks[i] {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                if stack.last().is_some_and(|(_, d)| *d == depth) {
                    stack.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(kw) if kw == "mod" => {
                if let (Some(Tok::Ident(name)), Some(Tok::Punct('{'))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    let mut p = here.clone();
                    p.push(name.clone());
                    out.inline_mods.push(p.clone());
                    depth += 1;
                    stack.push((p, depth));
                    i += 3;
                    continue;
                }
            }
            Tok::Ident(w) => {
                let after_sep =
                    i > 0 && (toks[i - 1] == Tok::Sep || toks[i - 1] == Tok::Punct('.'));
                let after_in = i > 0 && toks[i - 1] == Tok::Ident("in".into());
                if !after_sep && !after_in && toks.get(i + 1) == Some(&Tok::Sep) {
                    let root: Option<ModPath> = match w.as_str() {
                        "crate" => Some(Vec::new()),
                        "self" => Some(here.clone()),
                        "super" => {
                            let mut p = here.clone();
                            p.pop();
                            let mut j = i + 2;
                            while toks.get(j) == Some(&Tok::Ident("super".into()))
                                && toks.get(j + 1) == Some(&Tok::Sep)
                            {
                                p.pop();
                                j += 2;
                            }
                            i = j - 2;
                            Some(p)
                        }
                        name if here == *module && children.contains(name) => {
                            // A child module named without `self::`.
                            let mut paths = Vec::new();
                            let next = path_tree(&toks, i, here.clone(), &mut paths);
                            out.refs
                                .extend(paths.into_iter().map(|p| (here.clone(), p)));
                            i = next;
                            continue;
                        }
                        _ => None,
                    };
                    if let Some(root) = root {
                        let mut paths = Vec::new();
                        let next = path_tree(&toks, i + 2, root, &mut paths);
                        out.refs
                            .extend(paths.into_iter().map(|p| (here.clone(), p)));
                        i = next;
                        continue;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

// ---------------------------------------------------------------- graph

/// The library's modules and the module-to-module edges of its source.
struct Crate {
    modules: BTreeSet<ModPath>,
    /// from -> to, both modules.
    edges: BTreeSet<(ModPath, ModPath)>,
    /// Modules that import nothing from the crate (no outgoing edge): they
    /// cannot be part of a cycle, so anything may use them.
    leaves: BTreeSet<ModPath>,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `src/a/b.rs` and `src/a/b/mod.rs` -> `["a", "b"]`; `src/lib.rs` -> `[]`.
fn module_of(rel: &Path) -> ModPath {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src readable") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn load() -> Crate {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // main.rs is the binary, another crate.
    files.retain(|f| f.file_name().is_some_and(|n| n != "main.rs"));
    let by_module: BTreeMap<ModPath, PathBuf> = files
        .iter()
        .map(|f| {
            (
                module_of(f.strip_prefix(&src).expect("under src")),
                f.clone(),
            )
        })
        .collect();
    let mut modules: BTreeSet<ModPath> = by_module.keys().cloned().collect();
    let mut refs = Vec::new();
    let mut tests = BTreeSet::new();
    for (m, f) in &by_module {
        let text = std::fs::read_to_string(f).expect("readable source");
        let children: BTreeSet<String> = modules
            .iter()
            .filter(|c| c.len() == m.len() + 1 && c.starts_with(m))
            .map(|c| c.last().expect("child").clone())
            .collect();
        let s = scan(m, &text, &children);
        modules.extend(s.inline_mods);
        tests.extend(s.test_children);
        refs.extend(s.refs);
    }
    // Test-only file modules and everything below them.
    modules.retain(|m| !tests.iter().any(|t| m.starts_with(t)));
    refs.retain(|(from, _)| modules.contains(from));
    let mut edges = BTreeSet::new();
    for (from, path) in refs {
        // The longest prefix of the path that is a module.
        let to = (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| modules.contains(p))
            .unwrap_or_default();
        if to != from && !to.is_empty() {
            edges.insert((from, to));
        }
    }
    // A parent depends on the children it declares.
    for m in &modules {
        if m.len() > 1 {
            edges.insert((m[..m.len() - 1].to_vec(), m.clone()));
        }
    }
    let leaves = modules
        .iter()
        .filter(|m| !m.is_empty() && !edges.iter().any(|(f, _)| f == *m))
        .cloned()
        .collect();
    Crate {
        modules,
        edges,
        leaves,
    }
}

/// A section module: `xdp::config`, `proxy::config::route`, …
fn is_section(m: &[String]) -> bool {
    m.len() >= 2 && m[1] == "config"
}

/// The root config, the aggregator: `config` and its submodules.
fn is_root_config(m: &[String]) -> bool {
    m.first().is_some_and(|f| f == "config")
}

/// The node of a module in the top-level graph: its top-level module, or
/// `x::config` for a section, or the module itself for a leaf.
fn node(c: &Crate, m: &[String]) -> String {
    if c.leaves.contains(m) {
        m.join("::")
    } else if is_section(m) {
        format!("{}::config", m[0])
    } else {
        m[0].clone()
    }
}

/// Strongly connected components with more than one node (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        let edges = t.edges;
        for w in edges.get(v).into_iter().flatten() {
            if !t.index.contains_key(w.as_str()) {
                visit(t, w);
                let lw = t.low[w.as_str()];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if t.on.contains(w.as_str()) {
                let iw = t.index[w.as_str()];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            loop {
                let w = t.stack.pop().expect("on stack");
                t.on.remove(w);
                scc.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    let nodes: BTreeSet<&String> = edges.keys().chain(edges.values().flatten()).collect();
    for v in nodes {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out.sort();
    t.out
}

/// The top-level graph (sections as their own nodes).
fn top_level(c: &Crate) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in &c.modules {
        if !m.is_empty() {
            g.entry(node(c, m)).or_default();
        }
    }
    for (from, to) in &c.edges {
        if from.is_empty() {
            continue;
        }
        let (a, b) = (node(c, from), node(c, to));
        if a != b {
            g.entry(a).or_default().insert(b);
        }
    }
    g
}

fn show(g: &BTreeMap<String, BTreeSet<String>>) -> String {
    let mut s = String::new();
    for (a, bs) in g
        .iter()
        .filter(|(a, bs)| !bs.is_empty() || !a.contains("::"))
    {
        let list: Vec<&str> = bs.iter().map(String::as_str).collect();
        s.push_str(&format!("{a} -> {}\n", list.join(", ")));
    }
    s
}

fn why(c: &Crate, a: &str, b: &str) -> Vec<String> {
    c.edges
        .iter()
        .filter(|(f, t)| !f.is_empty() && node(c, f) == a && node(c, t) == b)
        .map(|(f, t)| format!("{} -> {}", f.join("::"), t.join("::")))
        .collect()
}

#[test]
fn top_level_modules_form_no_cycle() {
    let c = load();
    let g = top_level(&c);
    println!("{}", show(&g));
    let sccs = cycles(&g);
    let mut report = String::new();
    for scc in &sccs {
        report.push_str(&format!("cycle among {{{}}}:\n", scc.join(", ")));
        for a in scc {
            for b in scc.iter().filter(|b| *b != a) {
                for e in why(&c, a, b) {
                    report.push_str(&format!("  {e}\n"));
                }
            }
        }
    }
    assert!(sccs.is_empty(), "{report}");
}

#[test]
fn sections_import_no_aggregator_and_no_engine() {
    let c = load();
    let bad: Vec<String> = c
        .edges
        .iter()
        .filter(|(from, to)| is_section(from) && !is_section(to) && !c.leaves.contains(to))
        .map(|(f, t)| format!("{} -> {}", f.join("::"), t.join("::")))
        .collect();
    assert!(
        bad.is_empty(),
        "section modules may import only other sections and leaf modules:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_root_config_names_sections_not_engines() {
    let c = load();
    let bad: Vec<String> = c
        .edges
        .iter()
        .filter(|(from, to)| {
            is_root_config(from) && !is_root_config(to) && !is_section(to) && !c.leaves.contains(to)
        })
        .map(|(f, t)| format!("{} -> {}", f.join("::"), t.join("::")))
        .collect();
    assert!(
        bad.is_empty(),
        "the root config may import only sections and leaf modules:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_helpers_are_leaves() {
    let c = load();
    for h in HELPERS {
        let m = vec![(*h).to_owned()];
        assert!(c.modules.contains(&m), "no module {h}");
        assert!(
            c.leaves.contains(&m),
            "{h} imports from the crate: {:?}",
            c.edges.iter().filter(|(f, _)| *f == m).collect::<Vec<_>>()
        );
    }
}

#[test]
fn the_scanner_reads_paths() {
    let src = r#"use crate::{a::b, c::{d, e::F}};
        // crate::x
        /* crate::y */ let s = "crate::not a path";
        #[serde(with = "super::dur")] fn f<'a>(c: char) { let _ = '{'; kid::g(); x::<T>(); }
        pub(in crate::w) struct S;
        #[cfg(test)] mod tests { use crate::z; }
        mod inline { use super::super::v; }"#;
    let module = vec!["m".to_owned(), "n".to_owned()];
    let s = scan(&module, src, &["kid".to_owned()].into());
    let got: BTreeSet<String> = s.refs.iter().map(|(_, p)| p.join("::")).collect();
    let want: BTreeSet<String> = ["a::b", "c::d", "c::e::F", "m::dur", "m::n::kid::g", "m::v"]
        .map(String::from)
        .into();
    assert_eq!(got, want);
    assert_eq!(
        s.inline_mods,
        vec![vec!["m".to_owned(), "n".to_owned(), "inline".to_owned()]]
    );
}
