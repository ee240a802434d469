//! `safe_return_to` on any text: the answer is the input itself or `/`. An accepted path starts
//! with `/` then a letter, digit or `_` (so never `//` or `/\`), is at most 2048 bytes, holds no
//! backslash and no control character, is a valid `Location` header value, and a browser (the
//! WHATWG URL parser) resolves it to this very origin from any page of the site.
#![no_main]

use labgate::pages::safe_return_to;
use libfuzzer_sys::fuzz_target;
use url::Url;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let out = safe_return_to(Some(raw));
    if out == "/" {
        return;
    }
    assert_eq!(out, raw, "changed instead of accepted or replaced");
    let bytes = out.as_bytes();
    assert_eq!(bytes[0], b'/');
    assert!(
        bytes[1].is_ascii_alphanumeric() || bytes[1] == b'_',
        "{out:?}"
    );
    assert!(out.len() <= 2048);
    assert!(!out.chars().any(|c| c == '\\' || c.is_control()), "{out:?}");
    assert!(
        http::HeaderValue::from_str(&out).is_ok(),
        "not a header value: {out:?}"
    );
    for page in [
        "https://labgate.example/",
        "https://labgate.example:8443/oauth2/callback/gitlab?code=x&state=y",
        "http://10.0.0.1/a/b/c/",
    ] {
        let base = Url::parse(page).expect("base");
        let target = base.join(&out).expect("an accepted return_to is a URL");
        assert_eq!(target.origin(), base.origin(), "{out:?} leaves the site");
        assert!(target.username().is_empty() && target.password().is_none());
    }
});
