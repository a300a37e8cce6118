//! Whether the Docker tests can run here.

/// True when a Docker engine answers. Without one, Docker tests skip with a
/// note — except under `CI=true`, where a missing engine is a failure.
pub fn docker_available() -> bool {
    let ok = std::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "no Docker engine answers, and CI=true: run `cargo xtask provision` to install and start one"
            );
        }
        eprintln!(
            "note: skipping a Docker test: no Docker engine answers (run `cargo xtask provision`)"
        );
    }
    ok
}
