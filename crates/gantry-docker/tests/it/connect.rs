//! An engine that does not answer gives one clear line, not a panic.

use gantry_docker::{Docker, Error};

const CHILD: &str = "GANTRY_IT_CONNECT_CHILD";

#[tokio::test]
async fn unreachable_endpoints() {
    let cases = [
        (
            "unix:///nonexistent.sock",
            "cannot reach Docker at unix:///nonexistent.sock: socket /nonexistent.sock does not exist",
        ),
        (
            "tcp://127.0.0.1:1",
            "cannot reach Docker at tcp://127.0.0.1:1: Connection refused (os error 111)",
        ),
    ];
    for (endpoint, message) in cases {
        let err = Docker::connect_to(endpoint).await.unwrap_err();
        assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
        assert_eq!(err.to_string(), message);
    }
}

/// `connect` reads DOCKER_HOST; the variable is set for a child process, since changing the
/// environment of this multi-threaded test process is not sound.
#[test]
fn docker_host_is_honoured() {
    for endpoint in ["unix:///nonexistent.sock", "tcp://127.0.0.1:1"] {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "connect::connect_in_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env("DOCKER_HOST", endpoint)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}");
        assert!(
            stdout.contains(&format!(
                "connect error: cannot reach Docker at {endpoint}: "
            )),
            "{stdout}"
        );
    }
}

/// Does something only when started by `docker_host_is_honoured`.
#[tokio::test]
async fn connect_in_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    match Docker::connect().await {
        Ok(docker) => println!("connected to {}", docker.endpoint()),
        Err(err) => println!("connect error: {err}"),
    }
}
