//! What a real prompt needs on both ends: the shipped jobspecs' `args` with a prompt filled in
//! the way Nomad interpolates it, and the stand-in API's canned answers in each API's documented
//! format (the Responses API's SSE for codex, the Messages API's SSE or JSON for claude,
//! `streamGenerateContent` SSE for gemini). Every answer's text is [`REPLY_TEXT`].
#![allow(dead_code)]

use std::path::Path;

use super::upstream::{Recorded, Reply};

/// The text every canned answer carries; a CLI that printed it showed the model's reply.
pub const REPLY_TEXT: &str = "polydev-canned-reply-ok";

/// The canned answer to `request`, or a 404 in the API's error shape.
pub fn canned(request: &Recorded) -> Reply {
    let events = |raw: &str| {
        raw.split_inclusive("\n\n")
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let path = request.path.as_str();
    if path.starts_with("/v1/responses") {
        Reply::sse(events(include_str!("../fixtures/openai_responses.sse")))
    } else if path.starts_with("/v1/messages") {
        if String::from_utf8_lossy(&request.body).contains("\"stream\":true") {
            Reply::sse(events(include_str!("../fixtures/anthropic_messages.sse")))
        } else {
            Reply::json(include_str!("../fixtures/anthropic_message.json"))
        }
    } else if path.contains(":streamGenerateContent") {
        Reply::sse(events(include_str!("../fixtures/gemini_stream.sse")))
    } else if path.contains(":generateContent") {
        Reply::json(include_str!("../fixtures/gemini_router.json"))
    } else {
        Reply::Whole {
            status: 404,
            content_type: "application/json",
            body: "{\"error\":{\"message\":\"not served by the stand-in\"}}".into(),
        }
    }
}

/// The `args` of a shipped jobspec in `nomad/`, with `${NOMAD_META_prompt}` replaced by `prompt`
/// the way Nomad's interpolation replaces it (inside the string, whatever the prompt holds).
pub fn jobspec_args(file: &str, prompt: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("nomad")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let list = text
        .lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix("args"))
        .and_then(|rest| rest.trim_start().strip_prefix('='))
        .unwrap_or_else(|| panic!("{} has no `args = [...]` line", path.display()));
    let args: Vec<String> = serde_json::from_str(list.trim()).unwrap_or_else(|e| {
        panic!(
            "{}: args is not a list of plain strings: {e}",
            path.display()
        )
    });
    assert!(
        args.iter().any(|a| a.contains("${NOMAD_META_prompt}")),
        "{} does not pass the prompt",
        path.display()
    );
    args.iter()
        .map(|a| a.replace("${NOMAD_META_prompt}", prompt))
        .collect()
}
