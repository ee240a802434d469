//! The allowed-group rule against a naive reading of it: with no allowed groups everyone passes;
//! otherwise a user passes when some GitLab path `p` equals an allowed entry `a` or starts with
//! `a + "/"`, ignoring case (entries are taken trimmed of spaces and `/`, as the settings store
//! them; an empty entry admits nobody). Paths are built from look-alike segments (`acme`,
//! `ACME`, `acme-other`, `acmex`, ...) and free text so near-misses are common.
#![no_main]

use arbitrary::Arbitrary;
use labgate::provisioning::in_allowed_groups;
use libfuzzer_sys::fuzz_target;

const SEGMENTS: &[&str] = &[
    "acme",
    "ACME",
    "Acme",
    "acme-other",
    "acmex",
    "acme.",
    "ac",
    "me",
    "x",
    "y",
    "",
    " ",
    "é",
    "É",
    "İ",
    "ß",
    "K",
    "\u{212a}",
];

#[derive(Arbitrary, Debug)]
enum Segment {
    Known(u8),
    Free(String),
}

#[derive(Arbitrary, Debug)]
struct Path {
    segments: Vec<Segment>,
    leading_slash: bool,
    trailing_slash: bool,
    padded: bool,
}

impl Path {
    fn render(&self) -> String {
        let joined = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Known(i) => SEGMENTS[*i as usize % SEGMENTS.len()].to_string(),
                Segment::Free(t) => t.clone(),
            })
            .collect::<Vec<_>>()
            .join("/");
        let mut out = String::new();
        if self.padded {
            out.push(' ');
        }
        if self.leading_slash {
            out.push('/');
        }
        out.push_str(&joined);
        if self.trailing_slash {
            out.push('/');
        }
        if self.padded {
            out.push(' ');
        }
        out
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    user: Vec<Path>,
    allowed: Vec<Path>,
}

fn naive(user: &[String], allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    for a in allowed {
        let a = a.trim().trim_matches('/').to_lowercase();
        if a.is_empty() {
            continue;
        }
        for p in user {
            let p = p.to_lowercase();
            if p == a || p.starts_with(&format!("{a}/")) {
                return true;
            }
        }
    }
    false
}

fuzz_target!(|input: Input| {
    let user: Vec<String> = input.user.iter().map(Path::render).collect();
    let allowed: Vec<String> = input.allowed.iter().map(Path::render).collect();
    let got = in_allowed_groups(&user, &allowed);
    assert_eq!(
        got,
        naive(&user, &allowed),
        "user {user:?} allowed {allowed:?}"
    );
    // The named near-miss: `acme` never admits `acme-other` (or anything under it).
    if allowed
        .iter()
        .all(|a| a.trim().trim_matches('/').eq_ignore_ascii_case("acme"))
        && !allowed.is_empty()
        && user
            .iter()
            .all(|p| p.to_lowercase().starts_with("acme-other"))
    {
        assert!(!got, "acme admitted {user:?}");
    }
});
