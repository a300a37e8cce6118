//! The real `kubectl`, pointed at an [`Emulator`]: the reference client the emulator and
//! Gantry are checked against.

use std::path::PathBuf;
use std::process::Output;

use tempfile::TempDir;

use super::Emulator;

/// `kubectl` pointed at one emulator, with its own discovery cache.
pub struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    cache: TempDir,
}

impl Kubectl {
    /// `None` after a note when kubectl is not installed, except under `CI=true`, where that is
    /// a failure.
    pub fn new(emulator: &Emulator) -> Option<Kubectl> {
        let binary = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("kubectl"))
                .find(|p| p.is_file())
        });
        let Some(binary) = binary else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "kubectl is not installed, and CI=true: run `cargo xtask provision` (it \
                     installs kubectl 1.32; Debian's kubernetes-client 1.20 is too old)"
                );
            }
            eprintln!("note: skipping a kubectl test: kubectl is not installed");
            return None;
        };
        Some(Kubectl {
            binary,
            kubeconfig: emulator.kubeconfig_path().to_owned(),
            cache: tempfile::tempdir().expect("a directory for kubectl's cache"),
        })
    }

    pub fn output(&self, args: &[&str]) -> Output {
        std::process::Command::new(&self.binary)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary.display()))
    }

    /// Runs kubectl, which must succeed, and returns its standard output.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.output(args);
        assert!(
            output.status.success(),
            "kubectl {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs kubectl, which must fail, and returns its standard output and error together.
    #[track_caller]
    pub fn fails(&self, args: &[&str]) -> String {
        let output = self.output(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !output.status.success(),
            "kubectl {} succeeded:\n{text}",
            args.join(" ")
        );
        text
    }

    /// `kubectl rollout history deployment/NAME -n NAMESPACE` as (revision, change cause)
    /// pairs, oldest first; `<none>` is `None`.
    #[track_caller]
    pub fn rollout_history(&self, namespace: &str, name: &str) -> Vec<(i64, Option<String>)> {
        let text = self.ok(&[
            "rollout",
            "history",
            &format!("deployment/{name}"),
            "-n",
            namespace,
        ]);
        // deployment.apps/backend
        // REVISION  CHANGE-CAUSE
        // 1         <none>
        text.lines()
            .skip_while(|line| !line.starts_with("REVISION"))
            .skip(1)
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let (revision, cause) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
                let cause = cause.trim();
                (
                    revision
                        .parse()
                        .unwrap_or_else(|_| panic!("not a revision: {line}")),
                    (cause != "<none>").then(|| cause.to_owned()),
                )
            })
            .collect()
    }
}
