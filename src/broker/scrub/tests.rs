use super::*;
use http_body_util::{BodyExt, StreamBody};
use proptest::prelude::*;

const KEY: &str = "sk-ant-api03-Zq8mR1vX4yT7uW0pL3kN6bJ9hG2fD5sA-AA";

fn scrubber(key: &str) -> Scrubber {
    Scrubber::new(Arc::new(KeyForms::of(key)))
}

/// Feed `frames` through a fresh scrubber; the whole output and each push's output.
fn run(key: &str, frames: &[&[u8]]) -> (Vec<u8>, Vec<Bytes>) {
    let mut s = scrubber(key);
    let mut pushed = Vec::new();
    let mut all = Vec::new();
    for frame in frames {
        let out = s.push(Bytes::copy_from_slice(frame));
        all.extend_from_slice(&out);
        pushed.push(out);
    }
    all.extend_from_slice(&s.finish());
    (all, pushed)
}

fn stars(n: usize) -> String {
    "*".repeat(n)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_key_in_one_frame_is_replaced_byte_for_byte() {
    let text = format!("{{\"headers\":{{\"x-api-key\":\"{KEY}\"}}}}");
    let (out, _) = run(KEY, &[text.as_bytes()]);
    let want = format!("{{\"headers\":{{\"x-api-key\":\"{}\"}}}}", stars(KEY.len()));
    assert_eq!(String::from_utf8(out).unwrap(), want);
}

#[test]
fn a_key_split_at_every_byte_boundary_is_still_found() {
    let text = format!("data: {{\"echo\":\"Bearer {KEY}\"}}\n\n");
    let want = text.replace(KEY, &stars(KEY.len()));
    for cut in 0..=text.len() {
        let (a, b) = text.as_bytes().split_at(cut);
        let (out, _) = run(KEY, &[a, b]);
        assert_eq!(String::from_utf8(out).unwrap(), want, "cut at {cut}");
    }
    // Two cuts, both inside the key, and one byte per frame.
    let start = text.find(KEY).unwrap();
    for first in start..start + KEY.len() {
        for second in first..start + KEY.len() {
            let bytes = text.as_bytes();
            let (out, _) = run(
                KEY,
                &[&bytes[..first], &bytes[first..second], &bytes[second..]],
            );
            assert_eq!(String::from_utf8(out).unwrap(), want, "{first}/{second}");
        }
    }
    let singles: Vec<&[u8]> = text.as_bytes().chunks(1).collect();
    assert_eq!(String::from_utf8(run(KEY, &singles).0).unwrap(), want);
}

#[test]
fn clean_frames_pass_without_a_copy_or_a_hold() {
    let mut s = scrubber(KEY);
    let event = Bytes::from_static(b"event: delta\ndata: {\"text\":\"hello sk-ant\"}\n\n");
    let out = s.push(event.clone());
    assert_eq!(out, event);
    assert_eq!(out.as_ptr(), event.as_ptr(), "a clean frame is not copied");
    assert_eq!(s.held(), 0);
}

#[test]
fn only_a_possible_beginning_of_the_key_is_held_and_the_end_releases_it() {
    let mut s = scrubber(KEY);
    // Ends with the key's first 6 bytes: those wait; the rest goes now.
    let out = s.push(Bytes::from_static(b"say sk-ant"));
    assert_eq!(&out[..], b"say ");
    assert_eq!(s.held(), 6);
    // The next frame shows it was not the key: everything goes.
    let out = s.push(Bytes::from_static(b"hropic\n\n"));
    assert_eq!(&out[..], b"sk-anthropic\n\n");
    assert_eq!(s.held(), 0);
    // A body ending on a short beginning of the key sends it at the end.
    let out = s.push(Bytes::from_static(b"ends with sk-ant-api03-"));
    assert_eq!(&out[..], b"ends with ");
    assert_eq!(&s.finish()[..], b"sk-ant-api03-");
}

#[test]
fn a_cut_short_reflection_is_scrubbed_from_min_run_bytes_on() {
    let long = &KEY[..MIN_RUN + 5];
    let text = format!("invalid URL /v1?key={long}...");
    let (out, _) = run(KEY, &[text.as_bytes()]);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("invalid URL /v1?key={}...", stars(long.len()))
    );
    // At the very end of a body, split over frames.
    let text = format!("prefix {long}");
    let (a, b) = text.as_bytes().split_at(10);
    let (out, _) = run(KEY, &[a, b]);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("prefix {}", stars(long.len()))
    );
    // Shorter than MIN_RUN: the provider's public prefix and a little more pass.
    let short = &KEY[..MIN_RUN - 1];
    let (out, _) = run(KEY, &[format!("{short}!").as_bytes()]);
    assert_eq!(String::from_utf8(out).unwrap(), format!("{short}!"));
}

#[test]
fn encoded_forms_of_a_key_with_reserved_characters_are_scrubbed() {
    let key = "abc/def+ghi=jkl/mno+pqr";
    let forms = KeyForms::of(key);
    // Raw (plain JSON escaping is the same here), %XX, %xx, %25XX, JSON with \/.
    assert_eq!(forms.len(), 5);
    for (reflected, len) in [
        ("abc/def+ghi=jkl/mno+pqr", key.len()),
        ("abc%2Fdef%2Bghi%3Djkl%2Fmno%2Bpqr", 33),
        ("abc%2fdef%2bghi%3djkl%2fmno%2bpqr", 33),
        ("abc%252Fdef%252Bghi%253Djkl%252Fmno%252Bpqr", 43),
        ("abc\\/def+ghi=jkl\\/mno+pqr", 25),
    ] {
        let text = format!("Location: https://x/v1?alt=sse&key={reflected}&z=1");
        let scrubbed = forms.scrub(text.as_bytes()).expect(reflected);
        assert_eq!(
            String::from_utf8(scrubbed).unwrap(),
            format!("Location: https://x/v1?alt=sse&key={}&z=1", stars(len)),
        );
        // And split in two anywhere.
        for cut in 0..text.len() {
            let (a, b) = text.as_bytes().split_at(cut);
            let (out, _) = run(key, &[a, b]);
            assert!(
                !contains(&out, reflected.as_bytes()),
                "{reflected} cut at {cut}"
            );
        }
    }
    // A key of unreserved characters has one form.
    assert_eq!(KeyForms::of(KEY).len(), 1);
    assert!(KeyForms::of("").is_empty());
}

#[test]
fn a_short_key_is_scrubbed_whole() {
    let (out, _) = run("k3y", &[b"a k3", b"y and k3y"]);
    assert_eq!(String::from_utf8(out).unwrap(), "a *** and ***");
}

#[test]
fn header_values_are_scrubbed_and_names_holding_the_key_dropped() {
    let forms = KeyForms::of(KEY);
    let mut headers = HeaderMap::new();
    headers.insert(
        "location",
        HeaderValue::from_str(&format!("https://gw/v1?key={KEY}")).unwrap(),
    );
    headers.append("x-echo", HeaderValue::from_str(KEY).unwrap());
    headers.append("x-echo", HeaderValue::from_static("fine"));
    headers.insert(
        http::HeaderName::from_bytes(format!("x-{}", KEY.to_ascii_lowercase()).as_bytes()).unwrap(),
        HeaderValue::from_static("1"),
    );
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    forms.scrub_headers(&mut headers);
    assert_eq!(
        headers["location"],
        format!("https://gw/v1?key={}", stars(KEY.len()))
    );
    let echoes: Vec<_> = headers.get_all("x-echo").iter().collect();
    assert_eq!(echoes, vec![&stars(KEY.len())[..], "fine"]);
    assert_eq!(headers.len(), 4, "{headers:?}");
    assert_eq!(headers["content-type"], "text/plain");
}

#[tokio::test]
async fn the_body_holds_back_only_the_open_tail_and_scrubs_trailers() {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-echo", HeaderValue::from_str(KEY).unwrap());
    let (a, b) = KEY.split_at(20);
    let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
        Ok(Frame::data(Bytes::from(format!("one {a}")))),
        Ok(Frame::data(Bytes::from(format!("{b} two sk-")))),
        Ok(Frame::trailers(trailers)),
    ];
    let total: usize = "one ".len() + KEY.len() + " two sk-".len();
    let body = ScrubbedBody::new(
        StreamBody::new(futures::stream::iter(frames)),
        Arc::new(KeyForms::of(KEY)),
    );
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap();
    assert_eq!(trailers["x-echo"], stars(KEY.len()));
    let data = collected.to_bytes();
    assert_eq!(data.len(), total);
    assert_eq!(
        String::from_utf8(data.to_vec()).unwrap(),
        format!("one {} two sk-", stars(KEY.len()))
    );
}

#[tokio::test]
async fn size_hints_stay_exact() {
    let text = format!("a {KEY} b");
    let body = ScrubbedBody::new(
        http_body_util::Full::new(Bytes::from(text.clone())),
        Arc::new(KeyForms::of(KEY)),
    );
    assert_eq!(body.size_hint().exact(), Some(text.len() as u64));
    let out = body.collect().await.unwrap().to_bytes();
    assert_eq!(out.len(), text.len());
}

proptest! {
    /// Any text with the key (or a cut-short run of it) anywhere, cut into frames anywhere:
    /// the output has the input's length, holds no run of the key, and differs from the input
    /// only inside runs.
    #[test]
    fn no_split_lets_a_run_through(
        before in "[ -~\n]{0,80}",
        after in "[ -~\n]{0,80}",
        run_len in MIN_RUN..=KEY.len(),
        cuts in proptest::collection::vec(0usize..200, 0..6),
    ) {
        let text = format!("{before}{}{after}", &KEY[..run_len]);
        let bytes = text.as_bytes();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort();
        let mut frames = Vec::new();
        let mut at = 0;
        for cut in cuts {
            frames.push(&bytes[at..cut]);
            at = cut;
        }
        frames.push(&bytes[at..]);
        let (out, _) = run(KEY, &frames);
        prop_assert_eq!(out.len(), bytes.len());
        prop_assert!(!contains(&out, &KEY.as_bytes()[..MIN_RUN]));
        let start = before.len();
        let redacted = stars(run_len);
        prop_assert_eq!(&out[start..start + run_len], redacted.as_bytes());
        for (i, (o, b)) in out.iter().zip(bytes).enumerate() {
            if o != b {
                prop_assert_eq!(*o, REDACTION, "byte {} changed outside a run", i);
            }
        }
    }
}
