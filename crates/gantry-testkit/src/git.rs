//! Fixture git repositories, built with the `git` CLI so tests check Gantry's git code against
//! the reference implementation rather than against itself.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// A non-bare git repository on branch `main`, with a fixed identity and no global or system
/// git configuration, so tests behave the same on every machine.
pub struct FixtureRepo {
    path: PathBuf,
    // Keeps the temporary directory alive; `None` when the repo lives in a caller's directory.
    _dir: Option<TempDir>,
}

impl FixtureRepo {
    /// A new empty repository in its own temporary directory.
    #[track_caller]
    pub fn new() -> FixtureRepo {
        let dir = tempfile::tempdir().expect("create a temporary directory for a fixture repo");
        let path = dir.path().join("repo");
        let repo = FixtureRepo::init(path);
        FixtureRepo {
            _dir: Some(dir),
            ..repo
        }
    }

    /// A new empty repository at `parent/name`, e.g. under a [`crate::GitHttpServer`]'s root.
    /// A name ending in `.git` is served as `/<name>` by `git http-backend`.
    #[track_caller]
    pub fn new_in(parent: &Path, name: &str) -> FixtureRepo {
        FixtureRepo::init(parent.join(name))
    }

    #[track_caller]
    fn init(path: PathBuf) -> FixtureRepo {
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create fixture repo dir {}: {e}", path.display()));
        let repo = FixtureRepo { path, _dir: None };
        repo.git(["init", "--quiet", "--initial-branch=main"]);
        repo
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A `file://` URL for the repository.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.path.display())
    }

    /// Writes `contents` to `path` (relative to the work tree, parent directories created) and
    /// stages it.
    #[track_caller]
    pub fn write(&self, path: &str, contents: impl AsRef<[u8]>) -> &FixtureRepo {
        let file = self.path.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        }
        std::fs::write(&file, contents).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
        self.git(["add", "--", path]);
        self
    }

    /// Removes `path` from the work tree and the index.
    #[track_caller]
    pub fn remove(&self, path: &str) -> &FixtureRepo {
        self.git(["rm", "-r", "--quiet", "--", path]);
        self
    }

    /// Commits everything staged (an empty commit if nothing is) and returns the new sha.
    #[track_caller]
    pub fn commit(&self, message: &str) -> String {
        self.git(["commit", "--quiet", "--allow-empty", "-m", message]);
        self.rev_parse("HEAD")
    }

    /// Creates branch `name` at HEAD (without switching to it).
    #[track_caller]
    pub fn branch(&self, name: &str) {
        self.git(["branch", name]);
    }

    /// Switches to branch `name`.
    #[track_caller]
    pub fn checkout(&self, name: &str) {
        self.git(["checkout", "--quiet", name]);
    }

    /// Creates a lightweight tag `name` at HEAD.
    #[track_caller]
    pub fn tag(&self, name: &str) {
        self.git(["tag", name]);
    }

    /// Creates an annotated tag `name` at HEAD and returns the sha of the tag object (what a
    /// GitHub push webhook reports as `after` for an annotated tag).
    #[track_caller]
    pub fn tag_annotated(&self, name: &str, message: &str) -> String {
        self.git(["tag", "--annotate", "-m", message, name]);
        self.rev_parse(&format!("refs/tags/{name}"))
    }

    /// Moves the current branch to `rev`, like a force-push that rewrites history.
    #[track_caller]
    pub fn reset_hard(&self, rev: &str) {
        self.git(["reset", "--quiet", "--hard", rev]);
    }

    /// The full sha `rev` names.
    #[track_caller]
    pub fn rev_parse(&self, rev: &str) -> String {
        self.git(["rev-parse", "--verify", rev]).trim().to_owned()
    }

    /// Runs `git <args>` in the repository and returns its standard output.
    #[track_caller]
    pub fn git<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_git(&self.path, args)
    }
}

impl Default for FixtureRepo {
    fn default() -> Self {
        FixtureRepo::new()
    }
}

/// Runs `git <args>` in `dir` with a fixed identity and no global or system configuration, and
/// returns its standard output; panics with git's stderr on failure.
#[track_caller]
pub fn run_git<I, S>(dir: &Path, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = git_command();
    cmd.current_dir(dir).args(args);
    let shown = format!("{cmd:?}");
    let output = cmd.output().unwrap_or_else(|e| panic!("run {shown}: {e}"));
    if !output.status.success() {
        panic!(
            "{shown} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A `git` command isolated from the user's configuration and from any repository the test
/// itself runs inside of.
pub fn git_command() -> Command {
    let mut cmd = Command::new("git");
    for var in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Ada Tester")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada Tester")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .env("GIT_TERMINAL_PROMPT", "0");
    cmd
}
