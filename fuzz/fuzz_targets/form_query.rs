//! `Params::parse` on any query string or form body: never panics, keeps at most
//! `MAX_PARAMS` pairs, agrees with the WHATWG form decoder (`form_urlencoded`) whenever it
//! accepts, and what it decodes re-encodes (`encode_component`) to the same pairs. Any NUL-free
//! text survives `k=encode(text)` unchanged.
#![no_main]

use labgate::web::request::{encode_component, Params, MAX_PARAMS};
use libfuzzer_sys::fuzz_target;

fn encode(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fuzz_target!(|data: &[u8]| {
    if let Ok(params) = Params::parse(data) {
        assert!(params.len() <= MAX_PARAMS);
        for (k, v) in &params.0 {
            assert!(!k.contains('\0') && !v.contains('\0'), "NUL decoded");
        }
        // Strict decoding accepted it: the lenient reference decoder must read the same pairs.
        let reference: Vec<(String, String)> = form_urlencoded::parse(data)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(params.0, reference, "differs from form_urlencoded");
        // Decoded values re-encode to the same pairs.
        let again = Params::parse(encode(&params.0).as_bytes()).expect("re-encoded pairs decode");
        assert_eq!(again.0, params.0);
    } else {
        // Refusals are for bad encodings, NULs or too many pairs, never for plain tokens.
        let plain = data
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"&=+-_.*".contains(&b));
        let pairs = data.split(|&b| b == b'&').filter(|p| !p.is_empty()).count();
        assert!(!plain || pairs > MAX_PARAMS, "plain input refused");
    }
    // Any NUL-free text round-trips as a value and as a key.
    if let Ok(text) = std::str::from_utf8(data) {
        let one = Params::parse(encode(&[(text.to_string(), text.to_string())]).as_bytes());
        if text.contains('\0') {
            assert!(one.is_err(), "NUL accepted");
        } else {
            let one = one.expect("encoded text decodes");
            assert_eq!(one.0, vec![(text.to_string(), text.to_string())]);
        }
    }
});
