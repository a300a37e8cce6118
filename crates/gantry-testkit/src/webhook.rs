//! GitHub webhook deliveries as GitHub sends them: payloads shaped like the
//! real `push` and `ping` events, signed with `X-Hub-Signature-256`.

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// The `X-Hub-Signature-256` header GitHub sends for `body` and `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A `push` event payload with the fields GitHub sends (trimmed of the ones
/// nobody reads, such as avatars and every `*_url` but the clone URLs).
pub struct Push<'a> {
    pub repository: &'a str,
    pub clone_url: &'a str,
    pub git_ref: &'a str,
    pub before: &'a str,
    pub after: &'a str,
    pub message: &'a str,
    pub deleted: bool,
}

impl Push<'_> {
    pub fn to_json(&self) -> Value {
        let (owner, name) = self
            .repository
            .split_once('/')
            .unwrap_or(("owner", self.repository));
        let head_commit = if self.deleted {
            Value::Null
        } else {
            json!({
                "id": self.after,
                "tree_id": "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
                "distinct": true,
                "message": self.message,
                "timestamp": "2026-11-22T10:00:00Z",
                "url": format!("https://github.com/{}/commit/{}", self.repository, self.after),
                "author": { "name": "Dev", "email": "dev@example.com", "username": "dev" },
                "committer": { "name": "Dev", "email": "dev@example.com", "username": "dev" },
                "added": [], "removed": [], "modified": [".gantry.yml"]
            })
        };
        json!({
            "ref": self.git_ref,
            "before": self.before,
            "after": self.after,
            "created": self.before.bytes().all(|b| b == b'0'),
            "deleted": self.deleted,
            "forced": false,
            "base_ref": null,
            "compare": format!("https://github.com/{}/compare/{}...{}", self.repository, &self.before[..12.min(self.before.len())], &self.after[..12.min(self.after.len())]),
            "commits": if self.deleted { json!([]) } else { json!([head_commit.clone()]) },
            "head_commit": head_commit,
            "repository": {
                "id": 123456789,
                "node_id": "R_kgDOExample",
                "name": name,
                "full_name": self.repository,
                "private": false,
                "owner": { "name": owner, "login": owner, "id": 1, "type": "User" },
                "html_url": format!("https://github.com/{}", self.repository),
                "clone_url": self.clone_url,
                "ssh_url": format!("git@github.com:{}.git", self.repository),
                "default_branch": "main",
                "master_branch": "main"
            },
            "pusher": { "name": "dev", "email": "dev@example.com" },
            "sender": { "login": "dev", "id": 1, "type": "User" }
        })
    }
}

/// The `ping` GitHub sends when a webhook is created.
pub fn ping(repository: &str) -> Value {
    json!({
        "zen": "Design for failure.",
        "hook_id": 42,
        "hook": { "type": "Repository", "id": 42, "active": true, "events": ["push"],
                  "config": { "content_type": "json", "insecure_ssl": "0", "url": "http://127.0.0.1/hooks/github" } },
        "repository": { "id": 123456789, "name": repository.rsplit('/').next(), "full_name": repository, "private": false },
        "sender": { "login": "dev", "id": 1, "type": "User" }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_githubs_documented_example() {
        assert_eq!(
            sign("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
