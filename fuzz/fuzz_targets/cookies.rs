//! `parse_cookies` on any `Cookie` header: never panics; names are non-empty, trimmed and hold
//! no `;` or `=`; values hold no `;`. A header built from well-formed RFC 6265 pairs (tokens and
//! cookie-octets, values optionally quoted, `;` with or without a space) parses back to them.
#![no_main]

use arbitrary::Arbitrary;
use labgate::web::request::parse_cookies;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    raw: String,
    pairs: Vec<(String, String, bool)>,
    tight: bool,
}

fn is_token(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn is_cookie_octet(c: char) -> bool {
    matches!(c, '\x21' | '\x23'..='\x2b' | '\x2d'..='\x3a' | '\x3c'..='\x5b' | '\x5d'..='\x7e')
}

fuzz_target!(|input: Input| {
    let parsed = parse_cookies(&input.raw);
    assert!(parsed.len() <= input.raw.matches(';').count() + 1);
    for (name, value) in &parsed {
        assert!(!name.is_empty());
        assert_eq!(name.trim(), name);
        assert!(!name.contains([';', '=']), "{name:?}");
        assert!(!value.contains(';'), "{value:?}");
        assert!(
            !value.starts_with('"') && !value.ends_with('"'),
            "{value:?}"
        );
    }

    let pairs: Vec<(String, String, bool)> = input
        .pairs
        .into_iter()
        .map(|(n, v, q)| {
            (
                n.chars().filter(|&c| is_token(c)).collect::<String>(),
                v.chars()
                    .filter(|&c| is_cookie_octet(c))
                    .collect::<String>(),
                q,
            )
        })
        .filter(|(n, _, _)| !n.is_empty())
        .collect();
    let header = pairs
        .iter()
        .map(|(n, v, quoted)| {
            if *quoted {
                format!("{n}=\"{v}\"")
            } else {
                format!("{n}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join(if input.tight { ";" } else { "; " });
    let expected: Vec<(String, String)> = pairs.into_iter().map(|(n, v, _)| (n, v)).collect();
    assert_eq!(parse_cookies(&header), expected, "{header:?}");
});
