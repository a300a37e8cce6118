//! The names Docker and Kubernetes accept: image repositories and tags,
//! Kubernetes object names, and paths inside the workspace.
//!
//! Each check returns why a name is refused, as a phrase that follows
//! "invalid tag 'x': ".

/// What a valid Docker tag looks like, for help texts.
pub(crate) const TAG_RULE: &str =
    "a tag has up to 128 letters, digits, '_', '.' and '-', and does not start with '.' or '-'";

/// A Docker tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub(crate) fn check_tag(tag: &str) -> Result<(), String> {
    let Some(first) = tag.chars().next() else {
        return Err("it is empty".to_owned());
    };
    if let Some(bad) = tag
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!("{} is not allowed in a tag", describe(bad)));
    }
    if first == '.' || first == '-' {
        return Err(format!("it starts with '{first}'"));
    }
    if tag.len() > 128 {
        return Err(format!("it is {} characters long", tag.len()));
    }
    Ok(())
}

/// An image repository without tag or digest, like
/// `registry.example.com:5000/team/app`: an optional registry host (the
/// first part, when it has a '.' or a ':' or is `localhost`), then
/// lowercase parts separated by '/'.
pub(crate) fn check_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() {
        return Err("it is empty".to_owned());
    }
    if let Some(bad) = repository.chars().find(|c| c.is_whitespace()) {
        return Err(format!("{} is not allowed in an image", describe(bad)));
    }
    if repository.contains('@') {
        return Err("it has a digest".to_owned());
    }
    let mut parts: Vec<&str> = repository.split('/').collect();
    let last = parts.last().copied().unwrap_or_default();
    if last.contains(':') {
        return Err("it has a tag".to_owned());
    }
    let has_host = parts.len() > 1
        && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost");
    if has_host {
        let host = parts.remove(0);
        let (name, port) = host.split_once(':').unwrap_or((host, "1"));
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
        if !name_ok || port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("'{host}' is not a registry host (and port)"));
        }
    }
    for part in parts {
        if part.is_empty() {
            return Err("it has an empty part between '/'".to_owned());
        }
        if part.chars().any(|c| c.is_ascii_uppercase()) {
            return Err("repository names are lowercase".to_owned());
        }
        if let Some(bad) = part.chars().find(|&c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
        }) {
            return Err(format!(
                "{} is not allowed in a repository name",
                describe(bad)
            ));
        }
        if !part.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !part.ends_with(|c: char| c.is_ascii_alphanumeric())
        {
            return Err(format!(
                "the part '{part}' does not start and end with a letter or digit"
            ));
        }
    }
    Ok(())
}

/// What a valid DNS label looks like, for help texts.
pub(crate) const DNS_LABEL_RULE: &str =
    "up to 63 lowercase letters, digits and '-', starting and ending with a letter or digit";

/// What a valid DNS subdomain looks like, for help texts.
pub(crate) const DNS_SUBDOMAIN_RULE: &str = "up to 253 lowercase letters, digits, '-' and '.', each '.'-separated part starting and ending with a letter or digit";

/// An RFC 1123 label, the name of a namespace or a container.
pub(crate) fn check_dns_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".to_owned());
    }
    if name.len() > 63 {
        return Err(format!("it is {} characters long", name.len()));
    }
    check_label_chars(name)
}

/// An RFC 1123 subdomain, the name of a Deployment.
pub(crate) fn check_dns_subdomain(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err(format!("it is {} characters long", name.len()));
    }
    if name.is_empty() {
        return Err("it is empty".to_owned());
    }
    name.split('.').try_for_each(check_label_chars)
}

fn check_label_chars(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("it has an empty part".to_owned());
    }
    if label.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("Kubernetes names are lowercase".to_owned());
    }
    if let Some(bad) = label
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
    {
        return Err(format!("{} is not allowed", describe(bad)));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("it starts or ends with '-'".to_owned());
    }
    Ok(())
}

/// A relative path that stays inside the workspace.
pub(crate) fn check_workspace_path(path: &str) -> Result<(), String> {
    if path.trim().is_empty() {
        return Err("it is empty".to_owned());
    }
    if path.starts_with('/') {
        return Err("it is absolute".to_owned());
    }
    if path.split('/').any(|part| part == "..") {
        return Err("'..' would leave the workspace".to_owned());
    }
    Ok(())
}

/// `'/'`, or "a space" for characters that do not show.
fn describe(c: char) -> String {
    match c {
        ' ' => "a space".to_owned(),
        c if c.is_whitespace() || c.is_control() => format!("{:?}", c),
        c => format!("'{c}'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(result: Result<(), String>) -> String {
        match result {
            Ok(()) => "ok".to_owned(),
            Err(reason) => reason,
        }
    }

    #[test]
    fn tags() {
        let cases = [
            ("latest", "ok"),
            ("v1.2.3-rc_1", "ok"),
            ("_x", "ok"),
            ("", "it is empty"),
            (".x", "it starts with '.'"),
            ("-x", "it starts with '-'"),
            ("feature/x", "'/' is not allowed in a tag"),
            ("a b", "a space is not allowed in a tag"),
        ];
        for (tag, expected) in cases {
            assert_eq!(verdict(check_tag(tag)), expected, "{tag}");
        }
        assert_eq!(verdict(check_tag(&"a".repeat(128))), "ok");
        assert_eq!(
            verdict(check_tag(&"a".repeat(129))),
            "it is 129 characters long"
        );
    }

    #[test]
    fn repositories() {
        let cases = [
            ("backend", "ok"),
            ("nexus.example.com:8083/pet/backend", "ok"),
            ("localhost/app", "ok"),
            ("Registry.Example.com/app", "ok"),
            ("team/my_app.v2", "ok"),
            ("", "it is empty"),
            ("app:1.0", "it has a tag"),
            ("reg:5000/app:1.0", "it has a tag"),
            ("app@sha256:abc", "it has a digest"),
            ("team/App", "repository names are lowercase"),
            ("team//app", "it has an empty part between '/'"),
            ("app/", "it has an empty part between '/'"),
            (
                "reg:port/app",
                "'reg:port' is not a registry host (and port)",
            ),
            (
                "team/-app",
                "the part '-app' does not start and end with a letter or digit",
            ),
            ("team/a+b", "'+' is not allowed in a repository name"),
        ];
        for (repository, expected) in cases {
            assert_eq!(
                verdict(check_repository(repository)),
                expected,
                "{repository}"
            );
        }
    }

    #[test]
    fn kubernetes_names() {
        assert_eq!(verdict(check_dns_label("pet-project")), "ok");
        assert_eq!(verdict(check_dns_label("")), "it is empty");
        assert_eq!(
            verdict(check_dns_label("Pet")),
            "Kubernetes names are lowercase"
        );
        assert_eq!(verdict(check_dns_label("a.b")), "'.' is not allowed");
        assert_eq!(verdict(check_dns_label("-a")), "it starts or ends with '-'");
        assert_eq!(
            verdict(check_dns_label(&"a".repeat(64))),
            "it is 64 characters long"
        );
        assert_eq!(verdict(check_dns_subdomain("api.v2")), "ok");
        assert_eq!(
            verdict(check_dns_subdomain("api..v2")),
            "it has an empty part"
        );
        assert_eq!(verdict(check_dns_subdomain("api_v2")), "'_' is not allowed");
    }

    #[test]
    fn workspace_paths() {
        assert_eq!(verdict(check_workspace_path(".")), "ok");
        assert_eq!(verdict(check_workspace_path("backend/Dockerfile")), "ok");
        assert_eq!(verdict(check_workspace_path("/etc")), "it is absolute");
        assert_eq!(
            verdict(check_workspace_path("a/../../b")),
            "'..' would leave the workspace"
        );
        assert_eq!(verdict(check_workspace_path("")), "it is empty");
    }
}
