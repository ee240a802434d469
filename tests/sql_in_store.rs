//! SQL lives in `src/db/` only: the operations, the pages and the API call the store's
//! functions, which are the one place that knows the tables. This test reads every `.rs` file
//! under `src/` outside `src/db/` and fails, naming `file:line`, on
//! - a string literal that reads as SQL (it starts with a statement keyword, or holds two SQL
//!   keywords, or one with a `?N` parameter), and
//! - a rusqlite call or macro in the code (`.execute(`, `.query_row(`, `.prepare_cached(`,
//!   `params!`, ...).
//!
//! Comments are not read: a comment may name a statement to explain a choice. Tests inside
//! `src/` are read like the rest: they too call the store's functions (test-only helpers in
//! `src/db/` where needed).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// Keywords that start an SQL statement (as written here: upper case).
const STATEMENTS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "REPLACE",
    "PRAGMA",
    "CREATE",
    "DROP",
    "ALTER",
    "WITH",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "VACUUM",
    "ANALYZE",
    "ATTACH",
    "DETACH",
    "EXPLAIN",
    "REINDEX",
];

/// Keywords of SQL clauses: two of them in one literal make it SQL.
const CLAUSES: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "JOIN",
    "INSERT",
    "INTO",
    "UPDATE",
    "SET",
    "DELETE",
    "VALUES",
    "ORDER",
    "GROUP",
    "LIMIT",
    "OFFSET",
    "UNION",
    "COLLATE",
    "EXISTS",
    "RETURNING",
    "PRAGMA",
    "TABLE",
    "INDEX",
    "TRIGGER",
    "DISTINCT",
    "HAVING",
];

/// rusqlite's methods and macros: calling them outside the store is running SQL there.
/// (`Statement::query` is left out: `http`'s `Uri::query` shares the name, and a statement
/// comes from `.prepare` or `.prepare_cached` first.)
const CALLS: &[&str] = &[
    ".execute(",
    ".execute_batch(",
    ".query_row(",
    ".query_map(",
    ".query_and_then(",
    ".prepare(",
    ".prepare_cached(",
    ".pragma_update(",
    ".pragma_query(",
    ".pragma_query_value(",
    ".last_insert_rowid(",
    "params!",
    "named_params!",
    "params_from_iter(",
];

/// A file split into what the scan reads: string literals (line, content) and code lines with
/// comments and literals taken out.
#[derive(Debug, Default)]
struct Lexed {
    literals: Vec<(usize, String)>,
    code: Vec<String>,
}

/// Splits Rust source into string literals and code, dropping comments. Knows line and nested
/// block comments, plain, byte and raw strings (`r#"..."#`), and tells char literals (`'"'`)
/// from lifetimes (`'a`).
fn lex(source: &str) -> Lexed {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Lexed {
        literals: Vec::new(),
        code: vec![String::new()],
    };
    let mut line = 1;
    let mut i = 0;
    let newline = |out: &mut Lexed, line: &mut usize| {
        *line += 1;
        out.code.push(String::new());
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let prev_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if c == '\n' {
            newline(&mut out, &mut line);
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        newline(&mut out, &mut line);
                    }
                    i += 1;
                }
            }
        } else if let Some((start, hashes)) = raw_string_start(&chars, i, prev_ident) {
            // r"..." or r#"..."#: no escapes; ends at a quote followed by as many hashes.
            let first_line = line;
            let mut text = String::new();
            i = start;
            while i < chars.len() {
                if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                if chars[i] == '\n' {
                    newline(&mut out, &mut line);
                }
                text.push(chars[i]);
                i += 1;
            }
            out.literals.push((first_line, text));
            push_code(&mut out, "\"\"");
        } else if c == '"' || (c == 'b' && next == Some('"') && !prev_ident) {
            let first_line = line;
            let mut text = String::new();
            i += if c == 'b' { 2 } else { 1 };
            while i < chars.len() && chars[i] != '"' {
                let escaped = chars[i] == '\\';
                if escaped {
                    i += 1;
                }
                if let Some(&ch) = chars.get(i) {
                    if ch == '\n' {
                        newline(&mut out, &mut line);
                    }
                    // `\n`, `\t`, `\r` and a line continuation separate words like a space.
                    let blank = escaped && matches!(ch, 'n' | 't' | 'r' | '\n');
                    text.push(if blank { ' ' } else { ch });
                }
                i += 1;
            }
            i += 1;
            out.literals.push((first_line, text));
            push_code(&mut out, "\"\"");
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}', '"'), else a lifetime or label.
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
                push_code(&mut out, "' '");
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
                push_code(&mut out, "' '");
            } else {
                push_code(&mut out, "'");
                i += 1;
            }
        } else {
            out.code.last_mut().unwrap().push(c);
            i += 1;
        }
    }
    out
}

fn push_code(out: &mut Lexed, text: &str) {
    out.code.last_mut().unwrap().push_str(text);
}

/// At `r"`, `r#"`, `br"`, ... (not inside an identifier): where the content starts and how
/// many hashes close it.
fn raw_string_start(chars: &[char], i: usize, prev_ident: bool) -> Option<(usize, usize)> {
    if prev_ident {
        return None;
    }
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while chars.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (chars.get(j) == Some(&'"')).then_some((j + 1, hashes))
}

/// Whether a string literal reads as SQL.
fn is_sql(text: &str) -> bool {
    let words: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    let trimmed = text.trim_start();
    let starts_statement = STATEMENTS.iter().any(|keyword| {
        trimmed
            .strip_prefix(keyword)
            .is_some_and(|rest| rest.starts_with([' ', '\n', '\t', '(']))
    });
    let mut clauses: Vec<&str> = words
        .iter()
        .copied()
        .filter(|w| CLAUSES.contains(w))
        .collect();
    clauses.sort_unstable();
    clauses.dedup();
    let parameter = text
        .char_indices()
        .any(|(i, c)| c == '?' && text[i + 1..].starts_with(|d: char| d.is_ascii_digit()));
    starts_statement || clauses.len() >= 2 || (clauses.len() == 1 && parameter)
}

/// What the scan finds in one file: `line: what`.
fn findings(source: &str) -> Vec<(usize, String)> {
    let lexed = lex(source);
    let mut found: Vec<(usize, String)> = lexed
        .literals
        .iter()
        .filter(|(_, text)| is_sql(text))
        .map(|(line, text)| {
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            (*line, format!("SQL in a string: {text:?}"))
        })
        .collect();
    for (n, code) in lexed.code.iter().enumerate() {
        let squeezed: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        for call in CALLS {
            if squeezed.contains(call) {
                found.push((n + 1, format!("rusqlite call `{call}`: {}", code.trim())));
            }
        }
    }
    found.sort();
    found
}

fn rust_files(dir: &Path, skip: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path == skip {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, skip, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_sql_outside_the_store() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &src.join("db"), &mut files);
    assert!(files.len() > 20, "src/ not found: {files:?}");
    let mut report = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file).unwrap();
        let name = file.strip_prefix(root).unwrap().display().to_string();
        for (line, what) in findings(&source) {
            report.push(format!("{name}:{line}: {what}"));
        }
    }
    assert!(
        report.is_empty(),
        "SQL belongs in src/db/ (a function there, called from here):\n{}",
        report.join("\n")
    );
}

#[test]
fn the_scan_finds_sql_in_strings_and_rusqlite_calls_in_code() {
    let flagged = |source: &str| !findings(source).is_empty();
    assert!(flagged(
        r#"let q = "SELECT id FROM users WHERE login = ?1";"#
    ));
    assert!(flagged(r#"let q = "SELECT 1";"#));
    assert!(flagged(
        r#"conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")"#
    ));
    assert!(flagged("let q = r#\"DELETE FROM sessions\"#;"));
    assert!(flagged(
        "let q = concat!(\"SELECT \", cols!(), \" FROM users WHERE id = ?1\");"
    ));
    assert!(
        flagged("\" WHERE user_id = ?1\""),
        "one keyword and a parameter"
    );
    assert!(flagged("tx.prepare_cached(SQL)?"));
    assert!(
        flagged(r#"let q = "UPDATE users\nSET name = ?2";"#),
        "escaped newline"
    );
    assert!(flagged("conn\n    .query_row(SQL, [], |r| r.get(0))"));
    assert!(flagged("stmt.execute(params![a, b])?;"));
    assert!(flagged("let x = 1;\nconn.execute(\"x\", [])?;"));
}

#[test]
fn the_scan_passes_comments_prose_and_look_alikes() {
    let passed = |source: &str| {
        let found = findings(source);
        assert!(found.is_empty(), "{source:?}: {found:?}");
    };
    passed("// SELECT id FROM users: a comment may name a statement");
    passed("/* UPDATE users SET x /* nested */ WHERE id = 1 */");
    passed("/// `PRAGMA data_version` on every request costs a read");
    passed(r#"let m = "Select a group, then a user";"#);
    passed(r#"let m = "Update the settings from the form";"#);
    passed(r#"let m = "Where are you?";"#);
    passed(r#"let q = '"'; let l: &'static str = "ok";"#);
    passed("fn f<'a>(x: &'a str) -> &'a str { x }");
    passed("labgate::prepare_data_dir(&dir)?; path.exists();");
    passed(r#"let s = "a \"SELECT\" in quotes";"#);
    passed(r#"let pem = "-----BEGIN CERTIFICATE----- MIIB";"#);
    passed("let q = request.uri().query().unwrap_or(\"\");");
}

#[test]
fn literals_and_lines_are_told_apart() {
    let lexed = lex("let a = \"x\\\"y\"; // \"SELECT a FROM b\"\nlet b = r#\"q\"w\"#;\n'\\n';");
    let literals: Vec<(usize, &str)> = lexed
        .literals
        .iter()
        .map(|(l, t)| (*l, t.as_str()))
        .collect();
    assert_eq!(literals, vec![(1, "x\"y"), (2, "q\"w")]);
    assert_eq!(lexed.code.len(), 3);
    assert!(!lexed.code[0].contains("SELECT"));
}
