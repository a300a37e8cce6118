//! `gantry secret set|list|rm`: the real binary against a real `gantry serve` in this process,
//! with the value on standard input.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use gantry_server::App;

const TOKEN: &str = "secret-test-admin-token";
const PROJECT: &str = "demo/backend";

/// A real server on a loopback port, stopped when dropped.
struct Server {
    addr: SocketAddr,
    app: Arc<App>,
    _data: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        let data = tempfile::tempdir().expect("temp dir");
        // Parsed from text, as `gantry serve` reads it, with no environment overrides.
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nadmin_token = \"{TOKEN}\"\n\
             max_parallel_runs = 1\n\n[[project]]\nname = \"{PROJECT}\"\n\
             clone_url = \"file:///nonexistent\"\nwebhook_secret = \"webhook-secret\"\n",
            data.path().display()
        );
        let config = gantry_config::parse("gantry.toml", &text, &|_| None).expect("configuration");
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(async move {
                let server = gantry_server::Server::start(config)
                    .await
                    .expect("server starts");
                started_tx
                    .send((server.addr, server.app.clone()))
                    .expect("send address");
                server
                    .serve(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("serve");
            });
        });
        let (addr, app) = started_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server address");
        Server {
            addr,
            app,
            _data: data,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Runs `gantry ARGS` against this server with `stdin` as its standard input.
    fn gantry(&self, args: &[&str], stdin: &str) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gantry"));
        command
            .args(args)
            .env("GANTRY_SERVER", format!("http://{}", self.addr))
            .env("GANTRY_TOKEN", TOKEN)
            .env("NO_COLOR", "1")
            .env_remove("GANTRY_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for proxy in ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"] {
            command.env_remove(proxy);
        }
        let mut child = command.spawn().expect("run gantry");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.as_bytes()).expect("write stdin");
        drop(input);
        let output = child.wait_with_output().expect("wait for gantry");
        Output {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The stored value, decrypted with the server's key.
    fn stored_value(&self, name: &str) -> Option<String> {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let stored = runtime
            .block_on(self.app.store.get_secret(PROJECT, name))
            .expect("read the store")?;
        let sealed = gantry_secrets::Sealed {
            nonce: stored.nonce,
            ciphertext: stored.ciphertext,
        };
        let value = gantry_secrets::open(&self.app.secret_key, PROJECT, name, &sealed)
            .expect("the stored value opens");
        Some(value.expose().to_owned())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Debug)]
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

#[test]
fn secrets_are_set_from_stdin_listed_and_removed() {
    let server = Server::start();
    let value = "s3cret value with spaces\nand a second line";

    let set = server.gantry(
        &["secret", "set", PROJECT, "DEPLOY_TOKEN"],
        &format!("{value}\n"),
    );
    assert_eq!(set.code, Some(0), "{set:#?}");
    assert_eq!(set.stdout, "secret DEPLOY_TOKEN of demo/backend set\n");
    assert_eq!(
        server.stored_value("DEPLOY_TOKEN").as_deref(),
        Some(value),
        "stored as given, without the trailing newline"
    );
    let again = server.gantry(&["secret", "set", PROJECT, "API_KEY"], "other\r\n");
    assert_eq!(again.code, Some(0), "{again:#?}");
    assert_eq!(server.stored_value("API_KEY").as_deref(), Some("other"));

    let list = server.gantry(&["secret", "list", PROJECT], "");
    assert_eq!(list.code, Some(0), "{list:#?}");
    let rows: Vec<Vec<&str>> = list
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["NAME", "CREATED", "UPDATED"],
            vec!["API_KEY", "just", "now", "just", "now"],
            vec!["DEPLOY_TOKEN", "just", "now", "just", "now"],
        ],
        "{list:#?}"
    );
    let json = server.gantry(&["secret", "list", PROJECT, "--json"], "");
    assert_eq!(json.code, Some(0), "{json:#?}");
    let body: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(body["secrets"][1]["name"], "DEPLOY_TOKEN");
    for output in [&set, &again, &list, &json] {
        assert!(
            !output.stdout.contains("s3cret") && !output.stderr.contains("s3cret"),
            "{output:#?}"
        );
    }

    let rm = server.gantry(&["secret", "rm", PROJECT, "DEPLOY_TOKEN"], "");
    assert_eq!(rm.code, Some(0), "{rm:#?}");
    assert_eq!(rm.stdout, "secret DEPLOY_TOKEN of demo/backend removed\n");
    assert_eq!(server.stored_value("DEPLOY_TOKEN"), None);
    let list = server.gantry(&["secret", "list", PROJECT], "");
    assert_eq!(list.stdout.lines().count(), 2, "{list:#?}");
}

#[test]
fn mistakes_exit_2_and_missing_things_exit_3() {
    let server = Server::start();
    let check = |args: &[&str], stdin: &str, code: i32, stderr: &str| {
        let output = server.gantry(args, stdin);
        assert_eq!(
            (output.code, output.stderr.as_str(), output.stdout.as_str()),
            (Some(code), stderr, ""),
            "gantry {args:?}"
        );
    };
    let empty = "error: the value of TOKEN is empty; give it on standard input, e.g. printf %s \
                 \"$VALUE\" | gantry secret set PROJECT TOKEN\n";
    check(&["secret", "set", PROJECT, "TOKEN"], "", 2, empty);
    check(&["secret", "set", PROJECT, "TOKEN"], "\n", 2, empty);
    check(
        &["secret", "set", PROJECT, "lower-case"],
        "value\n",
        2,
        "error: invalid secret name 'lower-case': use upper-case letters, digits and '_', not \
         starting with a digit (e.g. API_TOKEN)\n",
    );
    check(
        &["secret", "set", "nope/nope", "TOKEN"],
        "value\n",
        3,
        "error: project 'nope/nope' is not configured\n",
    );
    check(
        &["secret", "list", "nope/nope"],
        "",
        3,
        "error: project 'nope/nope' is not configured\n",
    );
    check(
        &["secret", "rm", PROJECT, "TOKEN"],
        "",
        3,
        "error: project 'demo/backend' has no secret TOKEN\n",
    );
    // The value is never an argument.
    let output = server.gantry(&["secret", "set", PROJECT, "TOKEN", "value"], "");
    assert_eq!(output.code, Some(2), "{output:#?}");
    assert!(
        output.stderr.contains("unexpected argument 'value'"),
        "{output:#?}"
    );
    assert_eq!(server.stored_value("TOKEN"), None);
}
