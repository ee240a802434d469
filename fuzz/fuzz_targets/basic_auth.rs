//! HTTP Basic credentials (`Authorization: Basic ...`), whatever they hold: decoding never
//! panics; accepted credentials are canonical base64 of `user:password` (re-encoding gives the
//! input back) with no `:` in the user; any `user:password` encoded decodes back to itself.
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine;
use labgate::web::auth::decode_basic;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    raw: String,
    user: String,
    password: String,
}

fuzz_target!(|input: Input| {
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some((user, password)) = decode_basic(&input.raw) {
        assert!(!user.contains(':'));
        assert_eq!(b64.encode(format!("{user}:{password}")), input.raw);
    }
    let user: String = input.user.replace(':', "");
    let encoded = b64.encode(format!("{user}:{}", input.password));
    assert_eq!(decode_basic(&encoded), Some((user, input.password.clone())));
});
