//! The offline test images. Docker Hub is out of reach in CI, so the images the tests run are
//! built from Debian packages and `docker import`ed: `local/busybox` from busybox-static and
//! `local/python` from debootstrap.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process;

use anyhow::{Context, Result};

use crate::cmd::{Cmd, pipe};

pub const BUSYBOX: &str = "local/busybox:latest";
pub const PYTHON: &str = "local/python:3.11";

const PATH_ENV: &str = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const HOST_BUSYBOX: &str = "/bin/busybox";
/// The Debian release whose python3 is 3.11.
const PYTHON_SUITE: &str = "bookworm";
const PYTHON_PACKAGES: &str = "python3,python3-flask,python3-pytest,python3-prometheus-client";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

struct Image {
    reference: &'static str,
    build: fn(&str) -> Result<()>,
    verify: fn(&str) -> Result<()>,
}

const IMAGES: &[Image] = &[
    Image {
        reference: BUSYBOX,
        build: build_busybox,
        verify: verify_busybox,
    },
    Image {
        reference: PYTHON,
        build: build_python,
        verify: verify_python,
    },
];

/// Builds each test image that is missing. A `tag_suffix` builds under other tags
/// (`local/busybox:latest-SUFFIX`), which proves the build without touching the real images.
pub fn ensure_all(tag_suffix: &str) -> Result<()> {
    for image in IMAGES {
        let reference = format!("{}{tag_suffix}", image.reference);
        if exists(&reference) {
            // An image built by an older version of this task may lack what the tests now use.
            match (image.verify)(&reference) {
                Ok(()) => {
                    eprintln!("==> image {reference} present");
                    continue;
                }
                Err(e) => eprintln!("==> image {reference} present but unfit ({e:#}); rebuilding"),
            }
        }
        eprintln!("==> building image {reference}");
        let fix =
            format!("fix the cause above and re-run `cargo xtask images` to build {reference}");
        (image.build)(&reference).with_context(|| format!("building {reference} failed; {fix}"))?;
        (image.verify)(&reference)
            .with_context(|| format!("{reference} was built but does not work; {fix}"))?;
    }
    Ok(())
}

pub fn exists(reference: &str) -> bool {
    Cmd::new("docker")
        .args(["image", "inspect", reference])
        .succeeds()
}

fn build_busybox(reference: &str) -> Result<()> {
    let rootfs = ScratchDir::new("busybox")?;
    let bin = rootfs.path().join("bin");
    fs::create_dir_all(&bin)?;
    fs::copy(HOST_BUSYBOX, bin.join("busybox"))
        .with_context(|| format!("could not copy {HOST_BUSYBOX}; is busybox-static installed?"))?;
    let list = Cmd::new(HOST_BUSYBOX).arg("--list").read()?;
    for applet in applets(&list) {
        symlink("busybox", bin.join(applet))
            .with_context(|| format!("could not link applet {applet}"))?;
    }
    fs::create_dir(rootfs.path().join("etc"))?;
    let tmp = rootfs.path().join("tmp");
    fs::create_dir(&tmp)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777))?;
    import(rootfs.path(), reference, &[PATH_ENV])
}

/// The applet names in `busybox --list` output, without `busybox` itself: linking that one
/// would replace the binary with a symlink to itself.
fn applets(list: &str) -> impl Iterator<Item = &str> {
    list.lines()
        .map(str::trim)
        .filter(|name| !name.is_empty() && *name != "busybox" && !name.contains('/'))
}

fn verify_busybox(reference: &str) -> Result<()> {
    Cmd::new("docker")
        .args(["run", "--rm", reference, "sh", "-c", "echo ok"])
        .run()
}

fn build_python(reference: &str) -> Result<()> {
    let rootfs = ScratchDir::new("python")?;
    let mirror = configured_mirror();
    let include = format!("--include={PYTHON_PACKAGES}");
    let debootstrap = Cmd::new("debootstrap")
        .args(["--variant=minbase", &include, PYTHON_SUITE])
        .arg(rootfs.path())
        .arg(&mirror);
    // Its hundreds of progress lines would bury the CI log; a failure still shows them.
    eprintln!("$ {debootstrap}  (about a minute)");
    debootstrap
        .run_quiet()
        .with_context(|| format!("debootstrap from {mirror} failed; is the mirror reachable?"))?;
    // The downloaded .debs (some 40 MB) are of no use inside the image.
    remove_files_in(&rootfs.path().join("var/cache/apt/archives"), ".deb")?;
    import(rootfs.path(), reference, &[PATH_ENV, "ENV LANG=C.UTF-8"])
}

fn verify_python(reference: &str) -> Result<()> {
    Cmd::new("docker")
        .args([
            "run",
            "--rm",
            reference,
            "python3",
            "-c",
            "import flask, pytest, prometheus_client",
        ])
        .run()
}

/// `tar -C rootfs -c . | docker import --change ... - reference`
pub(crate) fn import(rootfs: &Path, reference: &str, changes: &[&str]) -> Result<()> {
    let tar = Cmd::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(rootfs)
        .args(["-c", "."]);
    let changes = changes.iter().flat_map(|change| ["--change", change]);
    let docker = Cmd::new("docker")
        .arg("import")
        .args(changes)
        .args(["-", reference]);
    pipe(tar, docker)
}

pub(crate) fn remove_files_in(dir: &Path, suffix: &str) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("could not list {}", dir.display()))? {
        let path = entry?.path();
        if path.to_string_lossy().ends_with(suffix) {
            fs::remove_file(&path)
                .with_context(|| format!("could not remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// The Debian mirror apt is configured with, so debootstrap downloads from the same place.
pub(crate) fn configured_mirror() -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut listed: Vec<PathBuf> = entries
            .filter_map(|entry| Some(entry.ok()?.path()))
            .collect();
        listed.sort();
        files.extend(listed);
    }
    files
        .iter()
        .filter_map(|path| {
            let text = fs::read_to_string(path).ok()?;
            match path.extension()?.to_str()? {
                "list" => mirror_in_one_line_style(&text, PYTHON_SUITE),
                "sources" => mirror_in_deb822_style(&text, PYTHON_SUITE),
                _ => None,
            }
        })
        .next()
        .unwrap_or_else(|| DEFAULT_MIRROR.to_owned())
}

/// The first `deb URI SUITE ...` line for `suite` in a sources.list.
fn mirror_in_one_line_style(text: &str, suite: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("deb ")?.trim_start();
        // Skip the options: `deb [arch=amd64 signed-by=...] URI SUITE COMPONENTS`.
        let rest = match rest.strip_prefix('[') {
            Some(options) => options.split_once(']')?.1,
            None => rest,
        };
        let mut words = rest.split_whitespace();
        let (uri, line_suite) = (words.next()?, words.next()?);
        (line_suite == suite && is_fetchable(uri)).then(|| uri.to_owned())
    })
}

/// The first URI of the first enabled `Types: deb` stanza listing `suite` in a deb822 .sources file.
fn mirror_in_deb822_style(text: &str, suite: &str) -> Option<String> {
    deb822_stanzas(text).into_iter().find_map(|fields| {
        let field = |name: &str| {
            fields
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
        };
        let words = |name| field(name).unwrap_or("").split_whitespace();
        let enabled = !field("Enabled").is_some_and(|value| value.eq_ignore_ascii_case("no"));
        let wanted =
            enabled && words("Types").any(|t| t == "deb") && words("Suites").any(|s| s == suite);
        if !wanted {
            return None;
        }
        words("URIs")
            .find(|uri| is_fetchable(uri))
            .map(str::to_owned)
    })
}

/// Stanzas as `(field, value)` lists; continuation lines are joined onto their field.
fn deb822_stanzas(text: &str) -> Vec<Vec<(String, String)>> {
    let mut stanzas = Vec::new();
    let mut stanza: Vec<(String, String)> = Vec::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        if line.trim().is_empty() {
            stanzas.push(std::mem::take(&mut stanza));
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = stanza.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((key, value)) = line.split_once(':') {
            stanza.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    stanzas.push(stanza);
    stanzas
}

fn is_fetchable(uri: &str) -> bool {
    ["http://", "https://", "file:"]
        .iter()
        .any(|scheme| uri.starts_with(scheme))
}

/// A directory under /var/tmp (on disk, unlike a tmpfs /tmp) that is removed when dropped.
pub(crate) struct ScratchDir(PathBuf);

impl ScratchDir {
    pub(crate) fn new(purpose: &str) -> Result<ScratchDir> {
        let path = PathBuf::from(format!("/var/tmp/gantry-xtask-{purpose}-{}", process::id()));
        fs::create_dir_all(&path)
            .with_context(|| format!("could not create {}", path.display()))?;
        Ok(ScratchDir(path))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // A killed debootstrap can leave /proc or /sys mounted inside; never delete through those.
        let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mounted = mounts
            .lines()
            .filter_map(|line| line.split(' ').nth(1))
            .any(|point| Path::new(point).starts_with(&self.0));
        if mounted {
            eprintln!(
                "warning: left {} in place: something is mounted inside it",
                self.0.display()
            );
        } else if let Err(err) = fs::remove_dir_all(&self.0) {
            eprintln!("warning: could not remove {}: {err}", self.0.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applets_leave_out_busybox_itself() {
        let list = "[\n[[\nacpid\nbusybox\nsh\n\n";
        assert_eq!(
            applets(list).collect::<Vec<_>>(),
            ["[", "[[", "acpid", "sh"]
        );
    }

    #[test]
    fn one_line_sources() {
        let check = |text: &str, expected: Option<&str>| {
            assert_eq!(
                mirror_in_one_line_style(text, "bookworm").as_deref(),
                expected,
                "{text}"
            );
        };
        check(
            "deb http://ftp.de.debian.org/debian bookworm main\n",
            Some("http://ftp.de.debian.org/debian"),
        );
        check(
            "# deb http://old.example/debian bookworm main\n\
             deb-src http://src.example/debian bookworm main\n\
             deb http://security.debian.org/debian-security bookworm-security main\n\
             deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] https://m.example/debian bookworm main\n",
            Some("https://m.example/debian"),
        );
        check(
            "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n",
            None,
        );
        check("deb cdrom:[Debian 12]/ bookworm main\n", None);
        check("", None);
    }

    #[test]
    fn deb822_sources() {
        let check = |text: &str, expected: Option<&str>| {
            assert_eq!(
                mirror_in_deb822_style(text, "bookworm").as_deref(),
                expected,
                "{text}"
            );
        };
        let debian = "Types: deb\n\
                      # http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
                      URIs: http://deb.debian.org/debian\n\
                      Suites: bookworm bookworm-updates\n\
                      Components: main\n\
                      \n\
                      Types: deb\n\
                      URIs: http://deb.debian.org/debian-security\n\
                      Suites: bookworm-security\n";
        check(debian, Some("http://deb.debian.org/debian"));
        let disabled_first = "Types: deb\nURIs: http://a.example/debian\nSuites: bookworm\nEnabled: no\n\n\
                              types: deb-src deb\nuris:\n  http://b.example/debian\nsuites: bookworm\n";
        check(disabled_first, Some("http://b.example/debian"));
        check(
            "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n",
            None,
        );
        check(
            "Types: deb-src\nURIs: http://a.example/debian\nSuites: bookworm\n",
            None,
        );
    }
}
