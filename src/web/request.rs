//! A request as handlers see it: method, path, decoded parameters, cookies, client address;
//! and the response they return. Decoding is strict: bad encodings are a 400, never a guess.

use crate::error::{AppError, AppResult};
use percent_encoding::percent_decode;
use std::net::IpAddr;

/// Largest body read, bytes (forms and JSON).
pub const MAX_BODY: usize = 64 * 1024;
/// Most parameters (query and form together).
pub const MAX_PARAMS: usize = 256;

/// Decoded `name=value` pairs, in order; a repeated name is repeated.
#[derive(Debug, Default, Clone)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// Decodes `application/x-www-form-urlencoded` text strictly.
    pub fn parse(raw: &[u8]) -> AppResult<Params> {
        let mut out = Vec::new();
        for pair in raw.split(|&b| b == b'&') {
            if pair.is_empty() {
                continue;
            }
            if out.len() >= MAX_PARAMS {
                return Err(AppError::invalid(
                    "request",
                    format!("Too many parameters (at most {MAX_PARAMS})"),
                ));
            }
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            out.push((decode_component(name)?, decode_component(value)?));
        }
        Ok(Params(out))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn decode_component(raw: &[u8]) -> AppResult<String> {
    let bad = || AppError::invalid("request", "Malformed parameter encoding");
    // A '%' must be followed by two hex digits.
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let ok = raw.len() > i + 2
                && raw[i + 1].is_ascii_hexdigit()
                && raw[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(bad());
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    let plus_as_space: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let text = percent_decode(&plus_as_space)
        .decode_utf8()
        .map_err(|_| AppError::invalid("request", "Parameters must be valid UTF-8"))?;
    if text.contains('\0') {
        return Err(AppError::invalid(
            "request",
            "Parameters must not contain NUL characters",
        ));
    }
    Ok(text.into_owned())
}

/// Percent-encodes a value for a URL query component.
pub fn encode_component(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The `name=value` pairs of a `Cookie` header, in order; malformed pieces are skipped.
pub fn cookie_pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(';').filter_map(|piece| {
        let (name, value) = piece.split_once('=')?;
        let name = name.trim();
        let value = value.trim().trim_matches('"');
        (!name.is_empty()).then_some((name, value))
    })
}

/// [`cookie_pairs`], owned (for the fuzz targets and tests).
pub fn parse_cookies(header: &str) -> Vec<(String, String)> {
    cookie_pairs(header)
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[derive(Debug)]
pub struct Req {
    pub method: String,
    pub path: String,
    /// Raw query string, for `return_to` links.
    pub raw_query: String,
    pub query: Params,
    pub form: Params,
    pub headers: Vec<(String, String)>,
    pub client_ip: Option<IpAddr>,
    pub request_id: String,
    pub body: Vec<u8>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first cookie of that name in the `Cookie` header (read where asked: most requests
    /// ask for one or two).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        cookie_pairs(self.header("cookie")?)
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// A parameter from the form body, else the query string.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form.get(name).or_else(|| self.query.get(name))
    }

    /// Every value of a repeated parameter (form body first, then query string).
    pub fn params(&self, name: &str) -> Vec<&str> {
        let mut values = self.form.all(name);
        values.extend(self.query.all(name));
        values
    }

    /// A required parameter, trimmed; missing or empty is a 400 naming it.
    pub fn required(&self, name: &'static str) -> AppResult<&str> {
        match self.param(name).map(str::trim) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(AppError::invalid(
                name,
                format!("The '{name}' parameter is missing"),
            )),
        }
    }

    pub fn is_api(&self) -> bool {
        self.path.starts_with("/api/")
    }

    /// The path with its query, for coming back after sign-in.
    pub fn path_and_query(&self) -> String {
        if self.raw_query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.raw_query)
        }
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// More header fields, already in the form the server writes, shared by many responses.
    pub shared: Option<SharedHeaders>,
    pub body: Vec<u8>,
}

/// Header fields in the form the server writes them, kept to answer many requests alike (the
/// gate's identity headers, the same at every check of one caller): neither copied nor parsed
/// again per response.
pub type SharedHeaders =
    std::sync::Arc<Vec<(oxhttp::model::HeaderName, oxhttp::model::HeaderValue)>>;

pub const JSON: &str = "application/json";

/// The JSON text of a value, as [`Resp::json_of`] answers it.
pub fn json_bytes(value: &impl serde::Serialize) -> Vec<u8> {
    // Serializing to memory fails only for maps with non-string keys; labgate has none.
    serde_json::to_vec(value).unwrap_or_else(|e| {
        log::error!("response: JSON serialization failed: {e}");
        b"{}".to_vec()
    })
}

impl Resp {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Resp {
        Resp {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            shared: None,
            body: body.into(),
        }
    }

    pub fn json(value: &serde_json::Value) -> Resp {
        Resp::json_status(200, value)
    }

    pub fn json_status(status: u16, value: &serde_json::Value) -> Resp {
        Resp::json_of(status, value)
    }

    /// JSON of any serializable value (the same text as its `serde_json::Value`, keys aside:
    /// a struct writes its fields in their order, a `Value` sorts them).
    pub fn json_of(status: u16, value: &impl serde::Serialize) -> Resp {
        Resp::new(status, JSON, json_bytes(value))
    }

    pub fn no_content() -> Resp {
        Resp {
            status: 204,
            headers: Vec::new(),
            shared: None,
            body: Vec::new(),
        }
    }

    pub fn text(status: u16, text: impl Into<String>) -> Resp {
        Resp::new(status, "text/plain; charset=utf-8", text.into())
    }

    pub fn html(status: u16, html: String) -> Resp {
        Resp::new(status, "text/html; charset=utf-8", html)
    }

    /// 303 See Other (after a form POST) or 302 to a local path.
    pub fn redirect(location: &str) -> Resp {
        Resp {
            status: 303,
            headers: vec![("Location".into(), location.into())],
            shared: None,
            body: Vec::new(),
        }
    }

    /// 302 Found (the OAuth redirects).
    pub fn found(location: &str) -> Resp {
        Resp {
            status: 302,
            headers: vec![("Location".into(), location.into())],
            shared: None,
            body: Vec::new(),
        }
    }

    pub fn with_status(mut self, status: u16) -> Resp {
        self.status = status;
        self
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Resp {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `{"errors":[{"msg":...}]}` with the error's status.
    pub fn api_error(err: &AppError) -> Resp {
        let errors: Vec<serde_json::Value> = err
            .messages()
            .into_iter()
            .map(|m| serde_json::json!({ "msg": m }))
            .collect();
        Resp::json_status(err.status(), &serde_json::json!({ "errors": errors }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_decode_plus_percent_and_repeats() {
        let p = Params::parse(b"a=1+2&b=%C3%A9&a=3&flag&=x").unwrap();
        assert_eq!(p.get("a"), Some("1 2"));
        assert_eq!(p.all("a"), vec!["1 2", "3"]);
        assert_eq!(p.get("b"), Some("é"));
        assert_eq!(p.get("flag"), Some(""));
    }

    #[test]
    fn bad_encodings_are_refused() {
        for raw in [&b"a=%zz"[..], b"a=%4", b"a=%ff%fe", b"a=%00", b"a=\xff"] {
            assert!(Params::parse(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn too_many_params_are_refused() {
        let raw = "x=1&".repeat(MAX_PARAMS + 1);
        assert!(Params::parse(raw.as_bytes()).is_err());
        let ok = "x=1&".repeat(MAX_PARAMS);
        assert_eq!(Params::parse(ok.as_bytes()).unwrap().len(), MAX_PARAMS);
    }

    #[test]
    fn cookies_parse_leniently() {
        let c: Vec<(&str, &str)> = cookie_pairs("a=1; b = \"2\" ; junk; =x; c=").collect();
        assert_eq!(c, vec![("a", "1"), ("b", "2"), ("c", "")]);
    }
}

/// Properties (form and query parameters, the session cookie): decoding is exact on what browsers and
/// clients send and never panics on anything else. The fuzz target `form_query` and `cookies`
/// check the same with coverage guidance.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// Any short text a parameter can carry (NUL is refused by design).
    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(any::<char>(), 0..16)
            .prop_map(|chars| chars.into_iter().filter(|&c| c != '\0').collect())
    }

    /// A name, often one of a few so that names repeat.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("values".to_string()),
            Just("a".to_string()),
            Just(String::new()),
            text()
        ]
    }

    fn encode_pairs(pairs: &[(String, String)]) -> String {
        pairs
            .iter()
            .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    proptest! {
        #[test]
        fn encoded_pairs_decode_to_themselves_repeats_included(
            pairs in prop::collection::vec((name(), text()), 0..12)
        ) {
            let params = Params::parse(encode_pairs(&pairs).as_bytes()).unwrap();
            prop_assert_eq!(&params.0, &pairs);
            for (k, _) in &pairs {
                let expected: Vec<&str> =
                    pairs.iter().filter(|(n, _)| n == k).map(|(_, v)| v.as_str()).collect();
                prop_assert_eq!(params.all(k), expected);
            }
        }

        #[test]
        fn text_with_a_nul_is_refused(before in text(), after in text()) {
            let raw = format!("k={}", encode_component(&format!("{before}\0{after}")));
            prop_assert!(Params::parse(raw.as_bytes()).is_err());
        }

        #[test]
        fn form_like_bytes_decode_as_the_whatwg_decoder_or_are_refused(
            raw in r"[a-z=&+%0-9A-Fa-f\x{e9}\x00]{0,60}"
        ) {
            if let Ok(params) = Params::parse(raw.as_bytes()) {
                let reference: Vec<(String, String)> = url::form_urlencoded::parse(raw.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                prop_assert_eq!(&params.0, &reference);
                let again = Params::parse(encode_pairs(&params.0).as_bytes()).unwrap();
                prop_assert_eq!(again.0, params.0);
            }
        }

        #[test]
        fn any_bytes_decode_or_are_refused_without_panic(
            raw in prop::collection::vec(any::<u8>(), 0..300)
        ) {
            if let Ok(params) = Params::parse(&raw) {
                prop_assert!(params.len() <= MAX_PARAMS);
                let again = Params::parse(encode_pairs(&params.0).as_bytes()).unwrap();
                prop_assert_eq!(again.0, params.0);
            }
        }

        #[test]
        fn a_generated_cookie_header_parses_to_its_pairs(
            pairs in prop::collection::vec((
                "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}",
                r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]{0,24}",
                any::<bool>(),
            ), 0..8),
            tight in any::<bool>(),
        ) {
            let header = pairs
                .iter()
                .map(|(n, v, quoted)| if *quoted { format!("{n}=\"{v}\"") } else { format!("{n}={v}") })
                .collect::<Vec<_>>()
                .join(if tight { ";" } else { "; " });
            let expected: Vec<(String, String)> =
                pairs.into_iter().map(|(n, v, _)| (n, v)).collect();
            prop_assert_eq!(parse_cookies(&header), expected);
        }

        #[test]
        fn any_cookie_header_gives_well_formed_pairs(header in any::<String>()) {
            for (name, value) in parse_cookies(&header) {
                prop_assert!(!name.is_empty() && name.trim() == name);
                prop_assert!(!name.contains([';', '=']));
                prop_assert!(!value.contains(';'));
            }
        }
    }
}
