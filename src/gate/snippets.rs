//! The proxy configuration that puts an application behind labgate, for nginx, Caddy and
//! Traefik: the one source of that text. The application's page shows it with the
//! application's host names filled in, the README shows it for an example application (a test
//! checks that the README holds exactly what this writes), and the end-to-end tests run real
//! nginx and Caddy on what this writes.

use super::rules::Origin;

/// The identity headers labgate answers an admitted request with, as the proxies copy them to
/// the application.
pub const IDENTITY_HEADERS: &[&str] = &[
    "Remote-User",
    "Remote-Name",
    "Remote-Email",
    "Remote-Groups",
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "X-Auth-Request-Groups",
    "X-Auth-Request-Preferred-Username",
];

/// What a configuration is written for: the application's `name` (for comments and Traefik's
/// names) and `origin` (its URL, as browsers reach it through the proxy); where the proxy
/// reaches `labgate` (no trailing `/`: `http://127.0.0.1:9000`) and the application itself
/// (`upstream`: `http://127.0.0.1:8000`); and the address nginx and Caddy `bind` to (`None`:
/// every address, as a server usually does; the tests listen on loopback only).
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub origin: &'a Origin,
    pub bind: Option<&'a str>,
    pub name: &'a str,
    pub labgate: &'a str,
    pub upstream: &'a str,
}

/// A name for Traefik's routers and services: the application's name in lower case, letters
/// and digits kept, anything else a `-`.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "app".into()
    } else {
        out
    }
}

/// nginx: a `server` block. Each request first goes to labgate (`auth_request` to
/// `/gate/nginx`, naming the fixed origin and the request's path in `X-Original-URL`); 401
/// becomes the redirect labgate names, 403 shows labgate's page, and an admitted request
/// reaches the application with labgate's identity headers in place of any the client sent.
pub fn nginx(t: &Target<'_>) -> String {
    let o = t.origin;
    let listen = match (o.scheme, t.bind) {
        ("https", bind) => format!(
            "    listen {}443 ssl;\n    ssl_certificate     /etc/ssl/certs/{host}.pem;\n    ssl_certificate_key /etc/ssl/private/{host}.key;\n",
            bind.map(|b| format!("{b}:")).unwrap_or_default(),
            host = o.host
        ),
        (_, bind) => format!(
            "    listen {}{};\n",
            bind.map(|b| format!("{b}:")).unwrap_or_default(),
            o.port_or_default()
        ),
    };
    let check = |name: &str, why: &str| {
        format!(
            "    # {why}\n    location = /labgate-{name} {{\n        internal;\n        proxy_pass {labgate}/gate/nginx;\n        proxy_pass_request_body off;\n        proxy_set_header Content-Length \"\";\n        proxy_set_header X-Original-URL \"{o}$request_uri\";\n        proxy_set_header X-Original-Method $request_method;\n    }}\n",
            labgate = t.labgate,
        )
    };
    format!(
        "# {name} behind labgate: only the people labgate admits reach {upstream}.
server {{
{listen}    server_name {host};

    location / {{
        auth_request /labgate-check;
        # Not signed in: labgate answers 401 with its sign-in URL in Location.
        auth_request_set $labgate_signin $upstream_http_location;
        error_page 401 =302 $labgate_signin;
        # Signed in but not admitted: labgate's page says which groups would admit.
        error_page 403 = /labgate-denied;
        # Who labgate admitted. These replace any header of the same name the client sent
        # (an empty value sends none).
        auth_request_set $labgate_user $upstream_http_remote_user;
        auth_request_set $labgate_name $upstream_http_remote_name;
        auth_request_set $labgate_email $upstream_http_remote_email;
        auth_request_set $labgate_groups $upstream_http_remote_groups;
        proxy_set_header Remote-User $labgate_user;
        proxy_set_header Remote-Name $labgate_name;
        proxy_set_header Remote-Email $labgate_email;
        proxy_set_header Remote-Groups $labgate_groups;
        proxy_set_header X-Auth-Request-User $labgate_user;
        proxy_set_header X-Auth-Request-Email $labgate_email;
        proxy_set_header X-Auth-Request-Groups $labgate_groups;
        proxy_set_header X-Auth-Request-Preferred-Username $labgate_user;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_pass {upstream};
    }}

{check}
{denied}}}
",
        name = t.name,
        upstream = t.upstream,
        host = o.host,
        check = check(
            "check",
            "Asks labgate about each request (the body stays here)."
        ),
        denied = check(
            "denied",
            "labgate's refusal page with its reason (auth_request keeps only the status)."
        ),
    )
}

/// Caddy: a site block. Client-sent identity headers are deleted first (Caddy copies a header
/// only when labgate's answer has a value for it), then `forward_auth` asks labgate at
/// `/gate/forward` and copies its identity headers, then the request goes to the application.
pub fn caddy(t: &Target<'_>) -> String {
    let bind = t.bind.map(|b| format!("\tbind {b}\n")).unwrap_or_default();
    format!(
        "# {name} behind labgate: only the people labgate admits reach {upstream}.
{origin} {{
{bind}\troute {{
\t\t# Headers of these names sent by the client never reach the application.
\t\trequest_header -Remote-*
\t\trequest_header -X-Auth-Request-*
\t\tforward_auth {labgate} {{
\t\t\turi /gate/forward
\t\t\theader_up Host {{upstream_hostport}}
\t\t\tcopy_headers {headers}
\t\t}}
\t\treverse_proxy {upstream}
\t}}
}}
",
        name = t.name,
        upstream = t.upstream,
        origin = t.origin,
        labgate = t.labgate,
        headers = IDENTITY_HEADERS.join(" "),
    )
}

/// Traefik: dynamic configuration for the file provider (YAML): a router for the host, a
/// `forwardAuth` middleware asking labgate at `/gate/forward`, and the service. The regex
/// strips every client-sent header of labgate's names before copying labgate's.
pub fn traefik(t: &Target<'_>) -> String {
    let o = t.origin;
    let slug = slug(t.name);
    let (entry_point, tls) = if o.scheme == "https" {
        ("websecure", "\n      tls: {}")
    } else {
        ("web", "")
    };
    let headers: String = IDENTITY_HEADERS
        .iter()
        .map(|h| format!("          - {h}\n"))
        .collect();
    format!(
        "# {name} behind labgate: only the people labgate admits reach {upstream}.
# The entry point \"{entry_point}\" must listen on port {port}.
http:
  routers:
    {slug}:
      rule: \"Host(`{host}`)\"
      entryPoints: [{entry_point}]{tls}
      middlewares: [{slug}-labgate]
      service: {slug}
  middlewares:
    {slug}-labgate:
      forwardAuth:
        address: \"{labgate}/gate/forward\"
        authResponseHeaders:
{headers}        authResponseHeadersRegex: \"(?i)^(remote|x-auth-request)[-_]\"
  services:
    {slug}:
      loadBalancer:
        servers:
          - url: \"{upstream}\"
",
        name = t.name,
        upstream = t.upstream,
        port = o.port_or_default(),
        host = o.host,
        labgate = t.labgate,
    )
}

/// A target reaching labgate at `http://127.0.0.1:9000` and the application at
/// `http://127.0.0.1:8000`.
#[cfg(test)]
fn local_target<'a>(name: &'a str, origin: &'a Origin, bind: Option<&'a str>) -> Target<'a> {
    Target {
        name,
        origin,
        labgate: "http://127.0.0.1:9000",
        upstream: "http://127.0.0.1:8000",
        bind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> (Origin, String) {
        (
            Origin::parse("https://jupyter.lab.example").unwrap(),
            "JupyterHub".to_string(),
        )
    }

    #[test]
    fn slugs_are_lower_case_letters_digits_and_dashes() {
        for (name, expected) in [
            ("JupyterHub", "jupyterhub"),
            ("  Grafana (ops) 2 ", "grafana-ops-2"),
            ("équipe", "quipe"),
            ("***", "app"),
        ] {
            assert_eq!(slug(name), expected, "{name}");
        }
    }

    #[test]
    fn each_snippet_names_the_application_host_labgate_and_the_upstream() {
        let (origin, name) = example();
        let t = local_target(&name, &origin, None);
        let nginx = nginx(&t);
        assert!(
            nginx.contains("server_name jupyter.lab.example;"),
            "{nginx}"
        );
        assert!(nginx.contains("listen 443 ssl;"), "{nginx}");
        assert!(nginx.contains("X-Original-URL \"https://jupyter.lab.example$request_uri\""));
        assert!(nginx.contains("proxy_pass http://127.0.0.1:9000/gate/nginx;"));
        let caddy = caddy(&t);
        assert!(caddy.contains("https://jupyter.lab.example {"), "{caddy}");
        assert!(
            caddy.contains("forward_auth http://127.0.0.1:9000 {"),
            "{caddy}"
        );
        let traefik = traefik(&t);
        assert!(
            traefik.contains("rule: \"Host(`jupyter.lab.example`)\""),
            "{traefik}"
        );
        for h in IDENTITY_HEADERS {
            assert!(nginx.contains(&format!("proxy_set_header {h} ")), "{h}");
            assert!(caddy.contains(h) && traefik.contains(h), "{h}");
        }
    }

    #[test]
    fn a_plain_http_origin_listens_on_its_port() {
        let origin = Origin::parse("http://app.lab.test:8081").unwrap();
        let t = local_target("App", &origin, Some("127.0.0.1"));
        assert!(nginx(&t).contains("    listen 127.0.0.1:8081;\n"));
        assert!(caddy(&t).contains("\tbind 127.0.0.1\n"));
        assert!(traefik(&t).contains("entryPoints: [web]"));
    }
}

/// The README shows the three configurations written for this example application; a test
/// checks that it holds them exactly as they are written now.
#[cfg(test)]
mod readme {
    use super::*;

    fn example_snippets() -> Vec<(&'static str, String)> {
        let origin = Origin::parse("https://jupyter.lab.example").unwrap();
        let t = local_target("JupyterHub", &origin, None);
        vec![
            ("nginx", nginx(&t)),
            ("caddy", caddy(&t)),
            ("yaml", traefik(&t)),
        ]
    }

    #[test]
    fn the_readme_shows_the_configuration_written_for_its_example() {
        let readme = include_str!("../../README.md");
        let missing: Vec<String> = example_snippets()
            .into_iter()
            .map(|(lang, text)| format!("```{lang}\n{text}```\n"))
            .filter(|block| !readme.contains(block))
            .collect();
        assert!(
            missing.is_empty(),
            "README.md must show these blocks, as gate::snippets writes them for its example \
             application (JupyterHub at https://jupyter.lab.example):\n{}",
            missing.concat()
        );
    }

    #[test]
    fn the_traefik_configuration_reads_as_yaml_with_the_middleware_and_its_headers() {
        let (_, text) = &example_snippets()[2];
        let doc: serde_norway::Value = serde_norway::from_str(text).unwrap();
        let http = &doc["http"];
        assert_eq!(
            http["routers"]["jupyterhub"]["rule"].as_str(),
            Some("Host(`jupyter.lab.example`)")
        );
        assert_eq!(
            http["routers"]["jupyterhub"]["middlewares"][0].as_str(),
            Some("jupyterhub-labgate")
        );
        let auth = &http["middlewares"]["jupyterhub-labgate"]["forwardAuth"];
        assert_eq!(
            auth["address"].as_str(),
            Some("http://127.0.0.1:9000/gate/forward")
        );
        let copied: Vec<&str> = auth["authResponseHeaders"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|h| h.as_str())
            .collect();
        assert_eq!(copied, IDENTITY_HEADERS);
        assert!(auth["authResponseHeadersRegex"].as_str().is_some());
        assert_eq!(
            http["services"]["jupyterhub"]["loadBalancer"]["servers"][0]["url"].as_str(),
            Some("http://127.0.0.1:8000")
        );
    }
}
