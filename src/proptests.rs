//! Property tests of the parsers and of body replay.

use std::{
    convert::Infallible,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{header::RETRY_AFTER, HeaderMap, HeaderValue};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, StreamBody};
use proptest::prelude::*;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::{
    cache::{effective_lifetime, DEFAULT_LIFETIME, MAX_LIFETIME, MIN_LIFETIME},
    replay::ReplayBody,
    source::token_response::{
        lifetime_from_json, parse_error_body, parse_retry_after_at, parse_token,
    },
};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("access_token".to_owned()),
                    Just("expires_in".to_owned()),
                    Just("refresh_token".to_owned()),
                    Just("error".to_owned()),
                    "[a-z_]{1,12}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_token(&bytes);
        let _ = parse_error_body(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        if let Ok(token) = parse_token(&bytes) {
            prop_assert!(!token.access_token().expose_secret().is_empty());
        }
        let _ = parse_error_body(&bytes);
        let _ = lifetime_from_json(&value);
    }

    #[test]
    fn valid_responses_round_trip(
        access in "[A-Za-z0-9._~+/-]{1,200}",
        refresh in proptest::option::of("[A-Za-z0-9]{1,64}"),
        expires_in in proptest::option::of(1u32..=u32::MAX),
        scope in proptest::option::of("[a-z ]{1,20}"),
        extra in any::<i32>(),
    ) {
        let mut body = json!({ "access_token": access, "token_type": "Bearer", "unknown": extra });
        if let Some(r) = &refresh { body["refresh_token"] = json!(r); }
        if let Some(e) = expires_in { body["expires_in"] = json!(e); }
        if let Some(s) = &scope { body["scope"] = json!(s); }
        let token = parse_token(&serde_json::to_vec(&body).unwrap()).unwrap();
        prop_assert_eq!(token.access_token().expose_secret(), access.as_str());
        prop_assert_eq!(token.refresh_token().map(|r| r.expose_secret().to_owned()), refresh);
        prop_assert_eq!(
            token.expires_in(),
            expires_in.map(|e| Duration::from_secs(e.into()).min(MAX_LIFETIME))
        );
        prop_assert_eq!(token.scope().map(str::to_owned), scope);
    }

    #[test]
    fn any_integer_expires_in_is_clamped(secs in any::<i64>()) {
        let lifetime = lifetime_from_json(&json!(secs));
        prop_assert_eq!(lifetime.is_some(), secs > 0);
        let planned = effective_lifetime(lifetime, DEFAULT_LIFETIME);
        prop_assert!(planned >= MIN_LIFETIME && planned <= MAX_LIFETIME);
        if secs <= 0 {
            prop_assert_eq!(planned, DEFAULT_LIFETIME);
        }
    }

    #[test]
    fn any_float_expires_in_is_clamped(secs in any::<f64>()) {
        let value = serde_json::Number::from_f64(secs).map_or(Value::Null, Value::Number);
        let lifetime = lifetime_from_json(&value);
        prop_assert_eq!(lifetime.is_some(), secs.is_finite() && secs > 0.0);
        let planned = effective_lifetime(lifetime, DEFAULT_LIFETIME);
        prop_assert!(planned >= MIN_LIFETIME && planned <= MAX_LIFETIME);
    }

    #[test]
    fn retry_after_parses_seconds_dates_and_rejects_junk(
        secs in 0u32..10_000_000,
        junk in "[^0-9]{1,30}",
    ) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from(secs));
        prop_assert_eq!(
            parse_retry_after_at(&h, now),
            Some(Duration::from_secs(secs.into()).min(crate::source::MAX_RETRY_AFTER))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(secs.into()));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&date).unwrap());
        prop_assert_eq!(
            parse_retry_after_at(&h, now),
            Some(Duration::from_secs(secs.into()).min(crate::source::MAX_RETRY_AFTER))
        );
        if let Ok(v) = HeaderValue::from_str(&junk) {
            h.insert(RETRY_AFTER, v);
            let _ = parse_retry_after_at(&h, now);
        }
    }

    #[test]
    fn replay_is_byte_exact_or_refused(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..12),
        trailer in prop::option::of("[a-z0-9]{0,400}"),
        cap in 0usize..4096,
    ) {
        let total: usize = chunks.iter().map(Vec::len).sum();
        let expected: Vec<u8> = chunks.concat();
        let trailers = trailer.map(|v| {
            let mut t = HeaderMap::new();
            t.insert("x-trailer", HeaderValue::from_str(&v).unwrap());
            t
        });
        let mut frames: Vec<Result<Frame<Bytes>, Infallible>> =
            chunks.into_iter().map(|c| Ok(Frame::data(Bytes::from(c)))).collect();
        frames.extend(trailers.clone().map(|t| Ok(Frame::trailers(t))));
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let (first, handle) = ReplayBody::capture(body, cap);
            let sent = first.collect().await.unwrap();
            assert_eq!(sent.trailers(), trailers.as_ref());
            assert_eq!(&sent.to_bytes()[..], &expected[..], "the first attempt streams everything");
            match handle.replay::<Empty<Bytes>>() {
                Some(replay) => {
                    assert!(total <= cap, "{total} bytes replayed with a cap of {cap}");
                    let again = replay.collect().await.unwrap();
                    assert_eq!(again.trailers(), trailers.as_ref());
                    assert_eq!(&again.to_bytes()[..], &expected[..]);
                }
                // The cap counts the bookkeeping too: well under 3 KiB for a
                // dozen chunks and the trailers.
                None => assert!(
                    total + 3072 > cap,
                    "{total} bytes well within the cap {cap} must replay"
                ),
            }
        });
    }

    #[test]
    fn any_backoff_is_within_its_bounds(
        base in any::<(u64, u32)>(),
        max in any::<(u64, u32)>(),
        attempt in any::<u32>(),
    ) {
        let base = Duration::new(base.0, base.1 % 1_000_000_000);
        let max = Duration::new(max.0, max.1 % 1_000_000_000);
        let d = crate::backoff::jittered(base, max, attempt);
        prop_assert!(d <= max && d <= base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1))));
    }
}
