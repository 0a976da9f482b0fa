use super::*;
use serde_json::json;

fn content(value: Value) -> ContentRequest {
    serde_json::from_value(value).expect("content")
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[test]
fn the_rules_of_content_each_named() {
    let key = push_jose::PrivateKey::generate_p256();
    let jwe = push_jose::seal(&key.public(), b"x", None).expect("seal");
    let cases: Vec<(Value, usize, Result<&str, &str>)> = vec![
        (
            json!({"media_type": "application/json", "data": {"a": 1}}),
            100,
            Ok("plain"),
        ),
        (
            json!({"media_type": "text/plain", "data": "hello"}),
            100,
            Ok("plain"),
        ),
        (
            json!({"media_type": "application/json", "attachments": [{"name": "a.pdf", "media_type": "application/pdf", "data": b64(b"%PDF")}]}),
            100,
            Ok("plain"),
        ),
        (json!({"sealed": {"reg_1": jwe}}), 100, Ok("sealed")),
        (
            json!({"data": {"a": 1}}),
            100,
            Err("`content.media_type` is required"),
        ),
        (
            json!({"media_type": "json", "data": "x"}),
            100,
            Err("is not a media type"),
        ),
        (
            json!({"media_type": "text/plain", "data": {"a": 1}}),
            100,
            Err("is a string"),
        ),
        (
            json!({"media_type": "text/plain"}),
            100,
            Err("give `data`, `attachments` or both"),
        ),
        (
            json!({"media_type": "text/plain", "data": "0123456789"}),
            10,
            Err("more than the 10 allowed"),
        ),
        (
            json!({"media_type": "text/plain", "attachments": [{"name": "a", "media_type": "x/y", "data": b64(&[0; 11])}]}),
            10,
            Err("11 bytes, more than"),
        ),
        (
            json!({"media_type": "text/plain", "attachments": [{"name": "../a", "media_type": "x/y", "data": ""}]}),
            100,
            Err("`content.attachments[0].name`"),
        ),
        (
            json!({"media_type": "text/plain", "attachments": [{"name": "..", "media_type": "x/y", "data": ""}]}),
            100,
            Err("`content.attachments[0].name`"),
        ),
        (
            json!({"media_type": "text/plain", "attachments": [{"name": "a", "media_type": "pdf", "data": ""}]}),
            100,
            Err("`content.attachments[0].media_type`"),
        ),
        (
            json!({"media_type": "text/plain", "attachments": [{"name": "a", "media_type": "x/y", "data": "!!"}]}),
            100,
            Err("`content.attachments[0].data` is not base64"),
        ),
        (
            json!({"media_type": "text/plain", "data": "x", "attachments": vec![json!({"name": "a", "media_type": "x/y", "data": ""}); 17]}),
            100,
            Err("at most 16"),
        ),
        (json!({"sealed": {}}), 100, Err("a JWE for each of 1 to 64")),
        (
            json!({"sealed": {"reg_1": "a.b.c"}}),
            100,
            Err("`content.sealed.reg_1`: a compact JWE has 5 segments"),
        ),
        (
            json!({"sealed": {"reg_1": jwe}, "media_type": "text/plain"}),
            100,
            Err("`content.sealed` goes alone"),
        ),
        (
            json!({"sealed": {"reg_1": "x".repeat(max_jwe_bytes(10) + 1)}}),
            10,
            Err("larger than the limit"),
        ),
    ];
    for (value, max, expected) in cases {
        let result = check(content(value.clone()), max);
        match (result, expected) {
            (Ok(Plan::Plain(_)), Ok("plain")) | (Ok(Plan::Sealed(_)), Ok("sealed")) => {}
            (Err(e), Err(text)) => assert!(e.0.contains(text), "{value}: {e}"),
            (other, expected) => panic!("{value}: {other:?}, expected {expected:?}"),
        }
    }
}

#[test]
fn plaintext_is_sealed_to_each_key_and_opens_to_the_same_document() {
    let plan = check(
        content(json!({"media_type": "application/json", "data": {"request": "sign"},
            "attachments": [{"name": "doc.pdf", "media_type": "application/pdf", "data": b64(b"%PDF-1.7 marker")}]})),
        1 << 20,
    )
    .expect("plan");
    let Plan::Plain(document) = &plan else {
        panic!("plain")
    };
    for key in [
        push_jose::PrivateKey::generate_p256(),
        push_jose::PrivateKey::generate_x25519(),
        push_jose::PrivateKey::generate_rsa(2048).expect("rsa"),
    ] {
        let jwk = key.public().to_jwk().to_string();
        let jwe = seal_for(&plan, "reg_1", Some(&jwk)).expect("sealed");
        assert!(!jwe.contains("marker"));
        assert_eq!(
            push_jose::inspect(&jwe).expect("header").cty.as_deref(),
            Some(SEALED_CTY)
        );
        assert_eq!(&push_jose::open(&jwe, &key).expect("open"), document);
    }
    assert_eq!(seal_for(&plan, "reg_1", None), Err(Unsealable::NoKey));
}

#[test]
fn a_notifiers_jwe_must_fit_the_registrations_key() {
    let key = push_jose::PrivateKey::generate_p256();
    let other = push_jose::PrivateKey::generate_p256();
    let rsa = push_jose::PrivateKey::generate_rsa(2048).expect("rsa");
    let jwk = key.public().to_jwk().to_string();
    let mine = push_jose::seal(&key.public(), b"x", None).expect("seal");
    let plan = |jwe: &str| Plan::Sealed(BTreeMap::from([("reg_1".to_owned(), jwe.to_owned())]));
    assert_eq!(
        seal_for(&plan(&mine), "reg_1", Some(&jwk)),
        Ok(mine.clone())
    );
    let refused =
        |jwe: &str, registration: &str| match seal_for(&plan(jwe), registration, Some(&jwk)) {
            Err(Unsealable::Refused(why)) => why,
            other => panic!("{other:?}"),
        };
    let for_other = push_jose::seal(&other.public(), b"x", None).expect("seal");
    assert!(refused(&for_other, "reg_1").contains("`kid` names another key"));
    let for_rsa = push_jose::seal(&rsa.public(), b"x", None).expect("seal");
    assert!(refused(&for_rsa, "reg_1").contains("`alg` is `RSA-OAEP-256`"));
    assert!(refused(&mine, "reg_2").contains("missing for this target"));
}

#[test]
fn an_items_state() {
    let entry = |held, fetched_at, acked_at| crate::store::InboxEntry {
        registration_id: "reg".into(),
        notification_id: "ntf".into(),
        created_at: 0,
        expires_at: 100,
        size: 1,
        fetched_at,
        acked_at,
        held,
    };
    let cases = [
        (entry(true, None, None), 50, "pending"),
        (entry(true, Some(10), None), 50, "fetched"),
        (entry(false, Some(10), Some(20)), 50, "acked"),
        (entry(false, None, Some(20)), 500, "acked"),
        (entry(true, None, None), 100, "expired"),
        (entry(false, Some(10), None), 50, "expired"),
    ];
    for (entry, now, expected) in cases {
        assert_eq!(item_state(&entry, now), expected, "{entry:?} at {now}");
    }
}

#[test]
fn debug_shows_no_content() {
    let request = content(json!({"media_type": "text/plain", "data": "secret-marker"}));
    let plan = check(request.clone(), 100).expect("plan");
    assert!(!format!("{request:?} {plan:?}").contains("secret-marker"));
}
