//! The crate's one error type: each variant says what happened, where, and what to do.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The API server did not answer: refused, timed out, or the name did not resolve.
    #[error("cannot reach cluster '{cluster}' at {url}: {cause}")]
    Unreachable {
        cluster: String,
        url: String,
        cause: String,
    },
    /// `what` names the object, e.g. "deployment pet-project/backend".
    #[error("{what} not found")]
    NotFound { what: String },
    /// `deployment` is "namespace/name".
    #[error(
        "deployment {deployment} is paused; resume it first (kubectl rollout resume deployment/{name} -n {namespace})",
        name = split(.deployment).1,
        namespace = split(.deployment).0
    )]
    Paused { deployment: String },
    /// `known` lists the revisions the Deployment does have, ascending.
    #[error("deployment {deployment} has no revision {revision} (revisions: {})", list(.known))]
    UnknownRevision {
        deployment: String,
        revision: i64,
        known: Vec<i64>,
    },
    /// Someone else kept changing the object while Gantry patched it.
    #[error("{0}")]
    Conflict(String),
    /// The kubeconfig or the request is unusable.
    #[error("{0}")]
    Config(String),
    /// The API server refused a request.
    #[error("{0}")]
    Api(String),
}

fn split(deployment: &str) -> (&str, &str) {
    deployment
        .split_once('/')
        .unwrap_or(("default", deployment))
}

fn list(revisions: &[i64]) -> String {
    if revisions.is_empty() {
        return "none".to_owned();
    }
    let strings: Vec<String> = revisions.iter().map(i64::to_string).collect();
    strings.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn messages() {
        let errors = [
            Error::Unreachable {
                cluster: "prod".into(),
                url: "https://10.0.0.1:6443".into(),
                cause: "connection refused".into(),
            },
            Error::NotFound {
                what: "deployment pet-project/backend".into(),
            },
            Error::Paused {
                deployment: "pet-project/backend".into(),
            },
            Error::UnknownRevision {
                deployment: "pet-project/backend".into(),
                revision: 7,
                known: vec![3, 4, 5],
            },
            Error::UnknownRevision {
                deployment: "pet-project/backend".into(),
                revision: 7,
                known: vec![],
            },
        ];
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        expect![[r#"
            cannot reach cluster 'prod' at https://10.0.0.1:6443: connection refused
            deployment pet-project/backend not found
            deployment pet-project/backend is paused; resume it first (kubectl rollout resume deployment/backend -n pet-project)
            deployment pet-project/backend has no revision 7 (revisions: 3, 4, 5)
            deployment pet-project/backend has no revision 7 (revisions: none)"#]]
        .assert_eq(&text.join("\n"));
    }
}
