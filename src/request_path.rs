//! Request paths the broker forwards: one plain form, checked before anything is sent.
//!
//! The broker appends the client's path to the upstream's prefix (`https://gw/gw-anthropic`)
//! and checks it against the provider's `api_paths`. Gateways in front of an API (nginx, a
//! cloud load balancer) decode percent-encodings and resolve `.`/`..` before routing, so a path
//! that looks like `/v1/messages/…` to the broker could route to `/v1/files`, or outside the
//! prefix, at the upstream. [`normalise`] closes that gap: it returns the one form the broker
//! both checks and forwards, or refuses a path whose meaning a server could read differently.
//!
//! Invariants of a path [`normalise`] returns:
//! - It starts with `/` and has no dot segment: no segment is `.`, `..` or only dots, whether
//!   written plainly or percent-encoded in any case (`%2e`, `%2E`, `.%2e`), also not before a
//!   `;` path parameter (`..;x`, which Tomcat-style servers read as `..`). So appending it to
//!   the upstream prefix can never leave the prefix, whatever the upstream resolves.
//! - No percent-encoding in it decodes to `/`, `\`, `%` (double encoding), a control byte or
//!   a byte that is not part of valid UTF-8 (overlong forms such as `%c0%ae`); no raw `\` or
//!   non-ASCII byte. Segments are therefore the same for the broker and any server that decodes
//!   once, twice, or treats `\` as `/`.
//! - Percent-encoded unreserved characters (RFC 3986 §2.3) are decoded and the remaining
//!   encodings written with upper-case hex (RFC 3986 §6.2.2), so `/v1/messag%65s` is checked
//!   and forwarded as `/v1/messages`.
//!
//! [`within`] then matches `api_paths` on segment boundaries: `/v1/messages` allows
//! `/v1/messages`, `/v1/messages/batches` and the custom method `/v1/messages:count`, never
//! `/v1/messagesXYZ`.

/// Why a request path is refused (the broker answers 403 naming the reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafePath {
    #[error("it does not start with '/'")]
    NotAbsolute,
    #[error("it has a dot segment ({0:?}), which a gateway would resolve to another path")]
    DotSegment(String),
    #[error("it has {0:?}, an encoded '/', '\\' or '%' that a server could decode into a new path")]
    EncodedDelimiter(String),
    #[error("it has {0:?}, an encoded control character")]
    EncodedControl(String),
    #[error("it has a '\\', which some servers read as '/'")]
    Backslash,
    #[error("it has a byte that is not ASCII; percent-encode it as UTF-8")]
    RawNonAscii,
    #[error("it has {0:?}, which is not a valid percent-encoding ('%' and two hex digits)")]
    BadPercent(String),
    #[error("a segment does not decode to valid UTF-8")]
    NotUtf8,
}

/// The plain form of `path` (a request's path, without its query), or why it is refused.
pub fn normalise(path: &str) -> Result<String, UnsafePath> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(UnsafePath::NotAbsolute);
    };
    let mut out = String::with_capacity(path.len());
    for segment in rest.split('/') {
        out.push('/');
        out.push_str(&normalise_segment(segment)?);
    }
    Ok(out)
}

/// One segment in plain form: percent-decoding checked byte by byte.
fn normalise_segment(segment: &str) -> Result<String, UnsafePath> {
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(segment.len());
    let mut decoded = Vec::with_capacity(segment.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let encoded = segment.get(i..i + 3).unwrap_or(&segment[i..]);
                let byte = decode_hex_pair(&bytes[i + 1..])
                    .ok_or_else(|| UnsafePath::BadPercent(encoded.to_string()))?;
                match byte {
                    b'/' | b'\\' | b'%' => {
                        return Err(UnsafePath::EncodedDelimiter(encoded.to_string()));
                    }
                    0x00..=0x1f | 0x7f => {
                        return Err(UnsafePath::EncodedControl(encoded.to_string()));
                    }
                    _ if is_unreserved(byte) => out.push(byte as char),
                    _ => out.push_str(&format!("%{byte:02X}")),
                }
                decoded.push(byte);
                i += 3;
            }
            b'\\' => return Err(UnsafePath::Backslash),
            byte if !byte.is_ascii() => return Err(UnsafePath::RawNonAscii),
            byte => {
                out.push(byte as char);
                decoded.push(byte);
                i += 1;
            }
        }
    }
    if std::str::from_utf8(&decoded).is_err() {
        return Err(UnsafePath::NotUtf8);
    }
    if is_dot_segment(&decoded) {
        return Err(UnsafePath::DotSegment(segment.to_string()));
    }
    Ok(out)
}

/// Whether a decoded segment is `.`, `..` or any run of dots (Windows-style servers read `...`
/// as `..`), with trailing spaces or not, and before any `;parameters` (which Tomcat-style
/// servers strip before resolving dot segments).
fn is_dot_segment(decoded: &[u8]) -> bool {
    let name = decoded.split(|b| *b == b';').next().unwrap_or_default();
    let end = name
        .iter()
        .rposition(|b| *b != b' ')
        .map_or(0, |last| last + 1);
    let name = &name[..end];
    !name.is_empty() && name.iter().all(|b| *b == b'.')
}

fn decode_hex_pair(pair: &[u8]) -> Option<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    match pair {
        [high, low, ..] => Some((hex(*high)? * 16 + hex(*low)?) as u8),
        _ => None,
    }
}

/// RFC 3986 §2.3: `ALPHA / DIGIT / "-" / "." / "_" / "~"`.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Whether the plain path `path` lies within the plain prefix `prefix`, on a segment boundary:
/// equal to it, or continuing it with `/` (a sub-resource) or `:` (a custom method, as in
/// Google's `/v1beta/models/gemini-2.5-pro:generateContent`). A prefix ending in `/` matches
/// what lies below it.
pub fn within(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some("") => true,
        Some(rest) => {
            prefix.ends_with('/') || prefix.ends_with(':') || rest.starts_with(['/', ':'])
        }
    }
}

/// Percent-decode `text` (as in a query's parameter names, where `+` is a space); `None` if an
/// escape is malformed.
pub(super) fn percent_decode_query(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                out.push(decode_hex_pair(&bytes[i + 1..])?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_pass_unchanged() {
        for path in [
            "/",
            "/v1/messages",
            "/v1/messages/count_tokens",
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
            "/v1/files/file-abc_123~x",
            "/v1/a.b/c..d/.e/f.",
            "/v1//double",
            "/v1/%20space/%C3%A9t%C3%A9",
            "/v1/a;b=c/@:!$&'()*+,=",
        ] {
            assert_eq!(normalise(path).as_deref(), Ok(path), "{path}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_the_rest_upper_cased() {
        assert_eq!(normalise("/v1/messag%65s").unwrap(), "/v1/messages");
        assert_eq!(normalise("/v1/%7euser/%2Dx").unwrap(), "/v1/~user/-x");
        assert_eq!(normalise("/v1/a%3ab%c3%a9").unwrap(), "/v1/a%3Ab%C3%A9");
        assert_eq!(normalise("/v1/file%2ejson").unwrap(), "/v1/file.json");
    }

    #[test]
    fn dot_segments_are_refused_in_every_spelling() {
        for path in [
            "/v1/messages/../files",
            "/v1/messages/..",
            "/v1/messages/./x",
            "/v1/messages/../../../admin/users",
            "/..",
            "/v1/messages/%2e%2e/files",
            "/v1/messages/%2E%2E/files",
            "/v1/messages/.%2e/files",
            "/v1/messages/%2E./files",
            "/v1/messages/%2e/files",
            "/v1/messages/..;x=1/files",
            "/v1/messages/%2e%2e;/files",
            "/v1/messages/.../files",
            "/v1/messages/..%20/files",
        ] {
            assert!(
                matches!(normalise(path), Err(UnsafePath::DotSegment(_))),
                "{path}: {:?}",
                normalise(path)
            );
        }
    }

    #[test]
    fn encodings_a_server_could_decode_into_new_segments_are_refused() {
        let cases: [(&str, UnsafePath); 12] = [
            (
                "/v1/messages%2f..%2ffiles",
                UnsafePath::EncodedDelimiter("%2f".into()),
            ),
            (
                "/v1/messages%2F",
                UnsafePath::EncodedDelimiter("%2F".into()),
            ),
            ("/v1/a%5c..%5cb", UnsafePath::EncodedDelimiter("%5c".into())),
            (
                "/v1/%252e%252e/files",
                UnsafePath::EncodedDelimiter("%25".into()),
            ),
            ("/v1/a%00b", UnsafePath::EncodedControl("%00".into())),
            ("/v1/a%0d%0ab", UnsafePath::EncodedControl("%0d".into())),
            ("/v1/a%7F", UnsafePath::EncodedControl("%7F".into())),
            ("/v1/a\\..\\b", UnsafePath::Backslash),
            ("/v1/caf\u{e9}", UnsafePath::RawNonAscii),
            ("/v1/%zz", UnsafePath::BadPercent("%zz".into())),
            ("/v1/%2", UnsafePath::BadPercent("%2".into())),
            ("/v1/%c0%ae%c0%ae/x", UnsafePath::NotUtf8),
        ];
        for (path, want) in cases {
            assert_eq!(normalise(path), Err(want), "{path}");
        }
        assert_eq!(normalise("v1/messages"), Err(UnsafePath::NotAbsolute));
        assert_eq!(normalise(""), Err(UnsafePath::NotAbsolute));
    }

    #[test]
    fn prefixes_match_on_segment_boundaries_only() {
        let prefix = "/v1/messages";
        for path in [
            "/v1/messages",
            "/v1/messages/",
            "/v1/messages/count_tokens",
            "/v1/messages:batch",
        ] {
            assert!(within(path, prefix), "{path}");
        }
        for path in ["/v1/messagesXYZ", "/v1/message", "/v1/messages.json", "/v1"] {
            assert!(!within(path, prefix), "{path}");
        }
        assert!(within("/v1/x", "/v1/"));
        assert!(!within("/v1", "/v1/"));
        assert!(within("/anything", "/"));
        assert!(within("/v1beta/models/g:generate", "/v1beta/models/g:"));
    }

    #[test]
    fn query_names_decode_with_plus_as_space() {
        assert_eq!(percent_decode_query("%6Bey").unwrap(), b"key");
        assert_eq!(percent_decode_query("k%65y").unwrap(), b"key");
        assert_eq!(percent_decode_query("a+b").unwrap(), b"a b");
        assert_eq!(percent_decode_query("bad%g1"), None);
        assert_eq!(percent_decode_query("end%"), None);
    }
}
