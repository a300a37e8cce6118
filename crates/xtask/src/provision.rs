//! Bringing a fresh Debian 12 machine up to what the test suite needs: Debian packages and a
//! running Docker engine. Each step checks first, so a provisioned machine costs a few probes.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd::Cmd;

/// Debian packages the tests and the image builds need. Add new outside systems here.
/// (`libssl-dev` and `pkg-config`: git2's HTTPS transport builds against the system OpenSSL;
/// `docker-registry` and `apache2-utils`' `htpasswd`: the image push tests' registry.)
pub const PACKAGES: &[&str] = &[
    "docker.io",
    "busybox-static",
    "debootstrap",
    "libssl-dev",
    "pkg-config",
    "docker-registry",
    "apache2-utils",
    // promtool and prometheus: the metrics tests scrape Gantry with a real Prometheus.
    "prometheus",
    // The web UI's tests and benchmark drive a real headless Chromium through chromedriver.
    "chromium",
    "chromium-driver",
    // git http-backend serves the test repositories over smart HTTP.
    "git",
    // sshd (and ssh-keygen) serve them over SSH, for the deploy-key and known_hosts tests.
    "openssh-server",
];

/// kubectl talks to the Kubernetes API emulator in the deploy tests, which
/// check that kubectl and Gantry agree. Debian's own `kubernetes-client` is
/// 1.20, too old for that: the machines carry the `kubectl` package (1.32).
pub fn ensure_kubectl() -> Result<()> {
    let works = |_: ()| {
        Command::new("kubectl")
            .args(["version", "--client"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if works(()) {
        eprintln!("==> kubectl present");
        return Ok(());
    }
    eprintln!("==> installing kubectl");
    let installed = Command::new("apt-get")
        .args(["install", "-y", "-q", "kubectl"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !installed || !works(()) {
        bail!(
            "kubectl is missing and `apt-get install kubectl` did not provide it; install kubectl 1.32 (the deploy tests compare its view with Gantry's)"
        );
    }
    Ok(())
}

const DOCKERD_LOG: &str = "/tmp/gantry-dockerd.log";
const DOCKERD_STARTUP: Duration = Duration::from_secs(60);

/// Installs whichever of [`PACKAGES`] are missing, running `apt-get update` only if one is.
pub fn install_packages() -> Result<()> {
    let missing = missing_packages(PACKAGES)?;
    if missing.is_empty() {
        eprintln!("==> Debian packages present: {}", PACKAGES.join(", "));
        return Ok(());
    }
    let missing = missing.join(" ");
    let fix = format!(
        "check the mirror in /etc/apt/sources.list*, or run `apt-get install {missing}` as root"
    );
    eprintln!("==> apt-get update");
    apt_get()
        .arg("update")
        .run()
        .with_context(|| format!("could not update the package lists; {fix}"))?;
    eprintln!("==> installing {missing}");
    // Recommends are left out: they pull in services and desktop bits the tests never use.
    apt_get()
        .args(["install", "--no-install-recommends"])
        .args(missing.split(' '))
        .run()
        .with_context(|| format!("could not install {missing}; {fix}"))
}

fn apt_get() -> Cmd {
    // needrestart, where installed, would only add a page of "no services need to be restarted".
    Cmd::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("NEEDRESTART_SUSPEND", "1")
        .args(["-y", "-q"])
}

fn missing_packages<'a>(packages: &[&'a str]) -> Result<Vec<&'a str>> {
    // dpkg-query exits 1 when it has never heard of a package, so its status tells us nothing.
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${Package}\t${Status}\n"])
        .args(packages)
        .stderr(Stdio::null())
        .output()
        .context("could not run dpkg-query; xtask provisions Debian machines only")?;
    let installed = String::from_utf8_lossy(&output.stdout);
    Ok(packages
        .iter()
        .copied()
        .filter(|package| !is_installed(&installed, package))
        .collect())
}

/// Whether `dpkg-query -W -f='${Package}\t${Status}\n'` output shows `package` as installed.
fn is_installed(dpkg_query: &str, package: &str) -> bool {
    dpkg_query
        .lines()
        .any(|line| line.split_once('\t') == Some((package, "install ok installed")))
}

/// Starts `dockerd` unless an engine already answers, and waits until it does.
pub fn ensure_docker() -> Result<()> {
    if docker_answers() {
        eprintln!("==> docker engine answers");
        return Ok(());
    }
    eprintln!("==> starting dockerd (log: {DOCKERD_LOG})");
    let started = Instant::now();
    let log_start = fs::metadata(DOCKERD_LOG).map_or(0, |log| log.len());
    let mut dockerd = spawn_dockerd()?;
    let fix = "fix what it logged, or start dockerd yourself, and re-run";
    while started.elapsed() < DOCKERD_STARTUP {
        if docker_answers() {
            let seconds = started.elapsed().as_secs_f64();
            eprintln!("==> docker engine answers after {seconds:.1}s");
            return Ok(());
        }
        if let Some(status) = dockerd.try_wait().context("could not check on dockerd")? {
            let log = log_since(log_start);
            bail!("dockerd exited ({status}) before answering; {fix}. It logged:\n{log}");
        }
        thread::sleep(Duration::from_millis(250));
    }
    let (pid, seconds, log) = (
        dockerd.id(),
        DOCKERD_STARTUP.as_secs(),
        log_since(log_start),
    );
    bail!(
        "dockerd (pid {pid}) did not answer `docker info` within {seconds}s; {fix}. It logged:\n{log}"
    )
}

pub fn docker_answers() -> bool {
    Cmd::new("docker").arg("info").succeeds()
}

/// Starts dockerd in a session of its own, writing to the log file instead of our stdio, so it
/// outlives xtask and nobody reading our output waits for it.
fn spawn_dockerd() -> Result<Child> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(DOCKERD_LOG)
        .with_context(|| format!("could not open {DOCKERD_LOG} for dockerd's log"))?;
    Command::new("setsid")
        .arg("dockerd")
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .context("could not share dockerd's log file")?,
        )
        .stderr(log)
        .spawn()
        .context("could not start `setsid dockerd`; setsid comes with util-linux")
}

/// What dockerd wrote to its log since `start`, at most the last few kilobytes of it.
fn log_since(start: u64) -> String {
    let read = || -> std::io::Result<String> {
        let mut log = File::open(DOCKERD_LOG)?;
        let start = start.max(log.metadata()?.len().saturating_sub(4000));
        log.seek(SeekFrom::Start(start))?;
        let mut text = Vec::new();
        log.read_to_end(&mut text)?;
        Ok(String::from_utf8_lossy(&text).into_owned())
    };
    read().unwrap_or_else(|err| format!("(could not read {DOCKERD_LOG}: {err})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fully_installed_packages_count() {
        let dpkg_query = "docker.io\tinstall ok installed\n\
                          debootstrap\tdeinstall ok config-files\n\
                          git\tinstall ok unpacked\n";
        assert!(is_installed(dpkg_query, "docker.io"));
        assert!(!is_installed(dpkg_query, "debootstrap"));
        assert!(!is_installed(dpkg_query, "git"));
        assert!(!is_installed(dpkg_query, "busybox-static"));
        assert!(!is_installed(dpkg_query, "docker"));
    }
}
