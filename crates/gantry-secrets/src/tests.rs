#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine as _;
use expect_test::{Expect, expect};

use super::*;

fn key(byte: u8) -> SecretKey {
    SecretKey::from_bytes([byte; 32])
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The error's message with the temporary directory replaced, so it can be compared.
fn message(error: Error, dir: &Path) -> String {
    error
        .to_string()
        .replace(&dir.display().to_string(), "DATA")
}

#[test]
fn sealed_values_open_again() {
    let key = key(7);
    for value in [
        "hunter2",
        "",
        "line one\nline two\n",
        "ünïcødé 🔑",
        &"x".repeat(100_000),
    ] {
        let sealed = seal(&key, "demo/backend", "API_TOKEN", value).unwrap();
        assert_eq!(sealed.nonce.len(), NONCE_LEN);
        assert_eq!(
            sealed.ciphertext.len(),
            value.len() + 16,
            "value plus the tag"
        );
        let opened = open(&key, "demo/backend", "API_TOKEN", &sealed).unwrap();
        assert_eq!(opened.expose(), value);
    }
}

#[test]
fn every_seal_has_a_fresh_nonce() {
    let key = key(7);
    let a = seal(&key, "demo/backend", "API_TOKEN", "same value").unwrap();
    let b = seal(&key, "demo/backend", "API_TOKEN", "same value").unwrap();
    assert_ne!(a.nonce, b.nonce);
    assert_ne!(a.ciphertext, b.ciphertext);
    let plaintext = b"same value".as_slice();
    assert!(
        !a.ciphertext
            .windows(plaintext.len())
            .any(|w| w == plaintext)
    );
}

#[test]
fn another_key_does_not_open_it() {
    let sealed = seal(&key(1), "demo/backend", "API_TOKEN", "hunter2").unwrap();
    let error = open(&key(2), "demo/backend", "API_TOKEN", &sealed).unwrap_err();
    expect![[
        "cannot decrypt secret API_TOKEN of project demo/backend: it was not sealed with this key for this project and name (did GANTRY_SECRET_KEY or data_dir/secret.key change since it was stored? otherwise set the secret again)"
    ]]
    .assert_eq(&error.to_string());
}

#[test]
fn a_ciphertext_moved_to_another_project_or_name_does_not_open() {
    let key = key(3);
    let sealed = seal(&key, "demo/backend", "API_TOKEN", "hunter2").unwrap();
    for (project, name) in [
        ("demo/frontend", "API_TOKEN"),
        ("demo/backend", "OTHER_TOKEN"),
        // The separator keeps the parts apart: "demo/backend\0API_TOKEN" stays unique.
        ("demo/backend\0API", "TOKEN"),
        ("demo/backend", "API_TOKEN\0"),
    ] {
        let error = open(&key, project, name, &sealed).unwrap_err();
        assert!(
            matches!(error, Error::Open { .. }),
            "{project} {name}: {error}"
        );
    }
}

#[test]
fn damaged_values_are_refused() {
    let key = key(3);
    let sealed = seal(&key, "demo/backend", "API_TOKEN", "hunter2").unwrap();
    let mut flipped = sealed.clone();
    flipped.ciphertext[0] ^= 1;
    assert!(matches!(
        open(&key, "demo/backend", "API_TOKEN", &flipped),
        Err(Error::Open { .. })
    ));
    let mut truncated = sealed.clone();
    truncated.ciphertext.truncate(10);
    assert!(matches!(
        open(&key, "demo/backend", "API_TOKEN", &truncated),
        Err(Error::Open { .. })
    ));
    let short_nonce = Sealed {
        nonce: sealed.nonce[..12].to_vec(),
        ..sealed
    };
    expect!["secret API_TOKEN of project demo/backend is stored damaged: its nonce is 12 bytes, not 24; set it again"]
        .assert_eq(&open(&key, "demo/backend", "API_TOKEN", &short_nonce).unwrap_err().to_string());
}

#[test]
fn the_key_file_is_created_private_and_used_again() {
    let dir = tempfile::tempdir().unwrap();
    let first = SecretKey::load(dir.path(), &no_env).unwrap();
    let path = dir.path().join(KEY_FILE);
    assert_eq!(
        first.origin(),
        &KeyOrigin::File {
            path: path.clone(),
            created: true
        }
    );
    assert_eq!(mode(&path), 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.len(), 65, "64 hex digits and a newline: {text:?}");
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, [KEY_FILE], "no temporary file is left");

    let second = SecretKey::load(dir.path(), &no_env).unwrap();
    assert_eq!(
        second.origin(),
        &KeyOrigin::File {
            path,
            created: false
        }
    );
    let sealed = seal(&first, "demo/backend", "API_TOKEN", "hunter2").unwrap();
    assert_eq!(
        open(&second, "demo/backend", "API_TOKEN", &sealed)
            .unwrap()
            .expose(),
        "hunter2"
    );
}

#[test]
fn servers_starting_together_share_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<SecretKey> = std::thread::scope(|scope| {
        let loads: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| SecretKey::load(dir.path(), &no_env).unwrap()))
            .collect();
        loads.into_iter().map(|l| l.join().unwrap()).collect()
    });
    let created = keys
        .iter()
        .filter(|k| matches!(k.origin(), KeyOrigin::File { created: true, .. }))
        .count();
    assert_eq!(created, 1);
    let sealed = seal(&keys[0], "demo/backend", "API_TOKEN", "hunter2").unwrap();
    for key in &keys {
        assert!(open(key, "demo/backend", "API_TOKEN", &sealed).is_ok());
    }
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    SecretKey::load(dir.path(), &no_env).unwrap();
    let path = dir.path().join(KEY_FILE);
    for wider in [0o640, 0o604, 0o660, 0o700 | 0o002] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(wider)).unwrap();
        let error = SecretKey::load(dir.path(), &no_env).unwrap_err();
        assert!(matches!(error, Error::FileTooOpen { mode, .. } if mode == wider));
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    expect!["refusing to use the secret key file DATA/secret.key: its mode 0644 lets other users read or change it; run `chmod 600 DATA/secret.key`"]
        .assert_eq(&message(SecretKey::load(dir.path(), &no_env).unwrap_err(), dir.path()));
    // Narrower than 0600 is fine.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    SecretKey::load(dir.path(), &no_env).unwrap();
}

#[test]
fn a_damaged_key_file_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(KEY_FILE);
    std::fs::write(&path, "0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    expect!["the secret key file DATA/secret.key is not a usable key: it is 16 hex digits, not 64; it must hold 32 random bytes as 64 hex digits (it is created so at first start: restore it from a backup, or set GANTRY_SECRET_KEY)"]
        .assert_eq(&message(SecretKey::load(dir.path(), &no_env).unwrap_err(), dir.path()));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "0123456789abcdef\n",
        "never overwritten"
    );
}

#[test]
fn the_environment_wins_over_the_file_and_creates_none() {
    let dir = tempfile::tempdir().unwrap();
    let hex_key = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
    let from_hex = SecretKey::load(dir.path(), &|name: &str| {
        (name == KEY_ENV).then(|| format!(" {hex_key}\n"))
    })
    .unwrap();
    assert_eq!(from_hex.origin(), &KeyOrigin::Environment);
    assert!(!dir.path().join(KEY_FILE).exists());

    // The same 32 bytes in base64 are the same key.
    let bytes = hex::decode(hex_key).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let from_base64 = SecretKey::load(dir.path(), &|_: &str| {
        Some(b64.trim_end_matches('=').into())
    })
    .unwrap();
    let sealed = seal(&from_hex, "p/q", "N", "v").unwrap();
    assert_eq!(
        open(&from_base64, "p/q", "N", &sealed).unwrap().expose(),
        "v"
    );
}

fn check_env(value: &str, expected: Expect) {
    let dir = tempfile::tempdir().unwrap();
    let result = SecretKey::load(dir.path(), &|_: &str| Some(value.to_owned()));
    let actual = match result {
        Ok(_) => "ok".to_owned(),
        Err(error) => {
            let text = error.to_string();
            assert!(
                value.trim().len() < 4 || !text.contains(value.trim()),
                "the key is never repeated: {text}"
            );
            text
        }
    };
    expected.assert_eq(&actual);
}

#[test]
fn a_malformed_environment_key_is_explained() {
    let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![0xa5; n]);
    check_env(&"ab".repeat(32), expect!["ok"]);
    check_env(&b64(32), expect!["ok"]);
    check_env(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xfb; 32]),
        expect!["ok"],
    );
    check_env(
        "",
        expect![
            "GANTRY_SECRET_KEY is not a usable key: it is empty; it must be 32 random bytes written as 64 hex digits or in base64 (make one with `openssl rand -hex 32`), or unset it to use data_dir/secret.key"
        ],
    );
    check_env(
        &"ab".repeat(31),
        expect![
            "GANTRY_SECRET_KEY is not a usable key: it is 62 hex digits, not 64; it must be 32 random bytes written as 64 hex digits or in base64 (make one with `openssl rand -hex 32`), or unset it to use data_dir/secret.key"
        ],
    );
    check_env(
        &b64(16),
        expect![
            "GANTRY_SECRET_KEY is not a usable key: it decodes (as base64) to 16 bytes, not 32; it must be 32 random bytes written as 64 hex digits or in base64 (make one with `openssl rand -hex 32`), or unset it to use data_dir/secret.key"
        ],
    );
    check_env(
        "correct horse battery staple",
        expect![
            "GANTRY_SECRET_KEY is not a usable key: its 28 characters are neither hex digits nor base64; it must be 32 random bytes written as 64 hex digits or in base64 (make one with `openssl rand -hex 32`), or unset it to use data_dir/secret.key"
        ],
    );
}

#[test]
fn nothing_secret_reaches_debug_output() {
    let key = SecretKey::from_bytes([0x42; 32]);
    let debug = format!("{key:?}");
    assert_eq!(debug, "SecretKey { origin: Bytes, key: *** }");
    let opened = open(
        &key,
        "p/q",
        "N",
        &seal(&key, "p/q", "N", "hunter2").unwrap(),
    )
    .unwrap();
    assert_eq!(format!("{opened:?} {opened}"), "*** ***");
}
