//! The OpenAI formats' tests (byte-exact chunks, failures, resets, bodies, error statuses).

use super::*;
use axum::http::StatusCode;
use ragq_common::client_error::ErrorReason;
use ragq_common::event::{Done, RefChunk, Reference};
use serde_json::{Value, json};

use crate::envelope::{ApiError, to_py_json};
use crate::relay::{Failure, Item};
use ragq_common::event::{DocAgg, Usage};

fn failure(reason: ErrorReason) -> Failure {
    Failure {
        reason,
        error_id: "err_1".into(),
        message: "boom (error id err_1)".into(),
    }
}

fn parse(bytes: &[u8]) -> Vec<Value> {
    let s = std::str::from_utf8(bytes).unwrap();
    assert!(s.ends_with("\n\n"), "{s:?}");
    s.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let d = e.strip_prefix("data:").unwrap();
            if d == "[DONE]" {
                Value::from("[DONE]")
            } else {
                serde_json::from_str(d).unwrap_or_else(|err| panic!("{d}: {err}"))
            }
        })
        .collect()
}

fn done(answer: &str) -> Item {
    Item::Done(Box::new(Done {
        message_id: "m".into(),
        answer: answer.into(),
        prompt: String::new(),
        created_at: 1.0,
        usage: Usage::default(),
        stopped: false,
    }))
}

fn reference() -> Reference {
    Reference {
        total: 1,
        chunks: vec![RefChunk {
            id: "c1".into(),
            content: "five attempts".into(),
            document_name: "job-queue.md".into(),
            ..Default::default()
        }],
        doc_aggs: vec![DocAgg {
            doc_name: "job-queue.md".into(),
            doc_id: "d".into(),
            count: 1,
        }],
    }
}

#[test]
fn delta_chunk_is_byte_exact_python_json() {
    let mut f = OpenAiSse::new("c\"1", 1_700_000_000, 3, false);
    let b = f.event(Item::Delta("héllo \"x\"\n".into())).unwrap();
    assert_eq!(
        std::str::from_utf8(&b).unwrap(),
        "data:{\"id\": \"chatcmpl-c\\\"1\", \"choices\": [{\"delta\": {\"content\": \"héllo \\\"x\\\"\\n\", \
         \"role\": \"assistant\", \"function_call\": null, \"tool_calls\": null, \"reasoning_content\": null}, \
         \"finish_reason\": null, \"index\": 0, \"logprobs\": null}], \"created\": 1700000000, \
         \"model\": \"model\", \"object\": \"chat.completion.chunk\", \"system_fingerprint\": \"\", \
         \"usage\": null}\n\n"
    );
    // And it is the same as serialising the chunk as a whole.
    let v = &parse(&b)[0];
    assert_eq!(v["choices"][0]["delta"]["content"], "héllo \"x\"\n");
    assert_eq!(to_py_json(v), b[5..b.len() - 2].to_vec());
}

#[test]
fn done_sends_usage_reference_and_final_content_but_no_diff() {
    let mut f = OpenAiSse::new("c", 5, 4, true);
    assert!(f.event(Item::Reference(reference())).is_none());
    let a = f.event(Item::Delta("Five ".into())).unwrap();
    let b = f.event(Item::Delta("attempts.".into())).unwrap();
    assert!(f.event(Item::Delta(String::new())).is_none());
    let end = parse(&f.event(done("Five attempts [ID:0].")).unwrap());
    assert!(f.is_finished());
    assert!(f.event(Item::Delta("late".into())).is_none());

    let deltas: String = [a, b]
        .iter()
        .map(|x| {
            parse(x)[0]["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(deltas, "Five attempts.");
    // The inserted citation is not streamed as a delta: only final_content carries it.
    assert_eq!(end.len(), 2, "{end:?}");
    assert_eq!(end[1], "[DONE]");
    let last = &end[0];
    let choice = &last["choices"][0];
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["delta"]["content"], Value::Null);
    assert_eq!(choice["delta"]["final_content"], "Five attempts [ID:0].");
    assert_eq!(
        choice["delta"]["reference"][0]["document_name"],
        "job-queue.md"
    );
    assert_eq!(choice["delta"]["reference"][0]["id"], "c1");
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 14, "total_tokens": 18})
    );
    assert_eq!(last["object"], "chat.completion.chunk");
    assert_eq!(last["id"], "chatcmpl-c");
    assert_eq!(last["created"], 5);
}

#[test]
fn without_reference_the_final_chunk_has_none() {
    let mut f = OpenAiSse::new("c", 5, 1, false);
    f.event(Item::Reference(reference()));
    f.event(Item::Delta("ab".into()));
    let end = parse(&f.event(done("ab")).unwrap());
    let delta = end[0]["choices"][0]["delta"].as_object().unwrap();
    assert!(!delta.contains_key("reference") && !delta.contains_key("final_content"));
    assert_eq!(end[0]["usage"]["completion_tokens"], 2);
}

#[test]
fn failure_sends_error_chunk_then_final_then_done() {
    let mut f = OpenAiSse::new("c", 5, 1, true);
    f.event(Item::Delta("par".into()));
    let out = parse(
        &f.event(Item::Failed(failure(ErrorReason::UpstreamError)))
            .unwrap(),
    );
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(
        out[0]["choices"][0]["delta"]["content"],
        "**ERROR**: boom (error id err_1)"
    );
    assert_eq!(out[0]["choices"][0]["finish_reason"], Value::Null);
    assert_eq!(out[1]["choices"][0]["finish_reason"], "stop");
    assert_eq!(out[1]["choices"][0]["delta"]["final_content"], "par");
    assert_eq!(out[1]["choices"][0]["delta"]["reference"], json!([]));
    assert_eq!(out[1]["usage"]["completion_tokens"], 3);
    assert_eq!(out[2], "[DONE]");
    assert!(f.is_finished());
}

#[test]
fn reset_before_any_text_is_invisible() {
    let mut f = OpenAiSse::new("c", 5, 1, true);
    f.event(Item::Reference(reference()));
    assert!(f.event(Item::Reset).is_none());
    assert!(!f.is_finished());
    let d = parse(&f.event(Item::Delta("again".into())).unwrap());
    assert_eq!(d[0]["choices"][0]["delta"]["content"], "again");
    let end = parse(&f.event(done("again")).unwrap());
    // The first attempt's reference was dropped with it.
    assert_eq!(end[0]["choices"][0]["delta"]["reference"], json!([]));
    assert_eq!(end[0]["usage"]["completion_tokens"], 5);
}

#[test]
fn reset_after_text_ends_the_stream_with_an_error() {
    let mut f = OpenAiSse::new("c", 5, 1, false);
    f.event(Item::Delta("first attempt".into()));
    let out = parse(&f.event(Item::Reset).unwrap());
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(out[0]["choices"][0]["delta"]["content"], INTERRUPTED);
    assert_eq!(out[1]["choices"][0]["finish_reason"], "stop");
    assert_eq!(out[1]["usage"]["completion_tokens"], 13);
    assert_eq!(out[2], "[DONE]");
    assert!(f.is_finished());
    // The regenerated answer is not spliced on.
    assert!(f.event(Item::Delta("second".into())).is_none());
    assert!(f.event(done("second")).is_none());
}

#[test]
fn idle_is_a_comment() {
    let mut f = OpenAiSse::new("c", 5, 1, false);
    assert_eq!(&f.event(Item::Idle).unwrap()[..], super::super::KEEP_ALIVE);
    assert!(!f.is_finished());
}

#[test]
fn non_stream_body() {
    let c = Completion {
        chat_id: "c",
        model: "gpt-x",
        created: 7,
        prompt_chars: 3,
        with_reference: true,
    };
    let Item::Done(d) = done("héllo") else {
        unreachable!()
    };
    let r = reference();
    let v = completion_json(&c, &d, Some(&r));
    assert_eq!(v["id"], "chatcmpl-c");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-x");
    assert_eq!(v["choices"][0]["message"]["content"], "héllo");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["choices"][0]["message"]["reference"][0]["id"], "c1");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8,
               "completion_tokens_details": {"reasoning_tokens": 0,
               "accepted_prediction_tokens": 5, "rejected_prediction_tokens": 0}})
    );
    let v = completion_json(
        &Completion {
            with_reference: false,
            ..c
        },
        &d,
        Some(&r),
    );
    assert!(v["choices"][0]["message"].get("reference").is_none());
}

#[test]
fn error_bodies_and_statuses() {
    let e = OpenAiError::bad_param("model", "missing_required_parameter", "m");
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        e.body(),
        json!({"error": {"message": "m", "type": "invalid_request_error", "param": "model", "code": "missing_required_parameter"}})
    );
    let cases = [
        (
            ErrorReason::BadRequest,
            400,
            "invalid_request_error",
            "invalid_chat_configuration",
        ),
        (
            ErrorReason::UpstreamError,
            502,
            "server_error",
            "upstream_error",
        ),
        (
            ErrorReason::UpstreamUnavailable,
            502,
            "server_error",
            "upstream_unavailable",
        ),
        (
            ErrorReason::UpstreamTimeout,
            504,
            "server_error",
            "upstream_timeout",
        ),
        (
            ErrorReason::UpstreamRateLimited,
            429,
            "rate_limit_error",
            "upstream_rate_limited",
        ),
        (ErrorReason::Timeout, 504, "server_error", "timeout"),
        (ErrorReason::Cancelled, 500, "server_error", "cancelled"),
        (ErrorReason::Internal, 500, "server_error", "internal_error"),
    ];
    for (reason, status, kind, code) in cases {
        let e = OpenAiError::from_failure(&failure(reason));
        assert_eq!(e.status.as_u16(), status, "{reason:?}");
        assert_eq!((e.kind, e.code), (kind, code), "{reason:?}");
        assert_eq!(e.message, "**ERROR**: boom (error id err_1)");
    }
    let e = OpenAiError::from(ApiError::unavailable("down"));
    assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(e.retry_after, Some(1));
    assert_eq!(e.kind, "server_error");
    let e = OpenAiError::from(ApiError::busy("full"));
    assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(e.retry_after, Some(1));
    assert_eq!(e.kind, "rate_limit_error");
    let e = OpenAiError::from(ApiError::internal("db broke"));
    assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
}
