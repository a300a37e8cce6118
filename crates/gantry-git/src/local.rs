//! What `gantry run` needs to know about the working tree it runs on.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The commit and branch checked out in a local working tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalHead {
    pub sha: String,
    /// `None` on a detached HEAD.
    pub branch: Option<String>,
}

/// The HEAD of the repository containing `dir`, or `None` when `dir` is not in
/// a git repository or HEAD has no commit yet. A local run works without git,
/// so nothing here is an error.
pub fn local_head(dir: &Path) -> Option<LocalHead> {
    let repo = git2::Repository::discover(dir).ok()?;
    let head = repo.head().ok()?;
    let sha = head.peel_to_commit().ok()?.id().to_string();
    let branch = if head.is_branch() {
        head.shorthand().ok().map(String::from)
    } else {
        None
    };
    Some(LocalHead { sha, branch })
}

/// The URL of the `origin` remote of the repository `dir` is in, without credentials (for an
/// image's `org.opencontainers.image.source`), or `None` without a repository or an origin.
pub fn origin_url(dir: &Path) -> Option<String> {
    let repo = git2::Repository::discover(dir).ok()?;
    let origin = repo.find_remote("origin").ok()?;
    origin.url().ok().map(crate::error::redact_url)
}

/// What git ignores in a working tree, as `git status` sees it: paths matched by
/// `.gitignore` files, `.git/info/exclude` and `core.excludesFile`, except files git tracks
/// (a tracked file stays in even when a pattern matches it, as in git).
pub struct GitIgnores {
    repo: git2::Repository,
    /// Where the directory asked about sits in the working tree, `/`-separated, ending in `/`
    /// unless empty.
    prefix: String,
    /// The index's paths, for "tracked despite a pattern".
    tracked: BTreeSet<Vec<u8>>,
}

impl GitIgnores {
    /// The ignore rules for `dir`, or `None` when `dir` is not in a git working tree, or in
    /// a directory that tree ignores.
    pub fn open(dir: &Path) -> Option<GitIgnores> {
        let repo = git2::Repository::discover(dir).ok()?;
        let workdir = repo.workdir()?.canonicalize().ok()?;
        let dir = dir.canonicalize().ok()?;
        let relative: PathBuf = dir.strip_prefix(&workdir).ok()?.to_path_buf();
        let mut prefix = slash_path(&relative)?;
        if !prefix.is_empty() {
            prefix.push('/');
            // A directory the repository ignores as a whole (a scratch directory, or a project
            // under a home directory kept in git with `*` ignored) is not part of that
            // repository's tree: its rules would leave everything out.
            if repo.is_path_ignored(&prefix).unwrap_or(false) {
                return None;
            }
        }
        let tracked = repo
            .index()
            .map(|index| index.iter().map(|entry| entry.path).collect())
            .unwrap_or_default();
        Some(GitIgnores {
            repo,
            prefix,
            tracked,
        })
    }

    /// Whether `path` (relative to the directory given to [`GitIgnores::open`]) is ignored and
    /// not tracked. A directory is kept when git tracks anything inside it.
    pub fn is_ignored(&self, path: &Path, is_dir: bool) -> bool {
        let Some(relative) = slash_path(path) else {
            return false;
        };
        let full = format!("{}{relative}", self.prefix);
        if full == ".git" || full.starts_with(".git/") {
            return false;
        }
        // libgit2 applies directory-only patterns (`target/`) to a path ending in `/`.
        let asked = if is_dir {
            format!("{full}/")
        } else {
            full.clone()
        };
        if !self.repo.is_path_ignored(&asked).unwrap_or(false) {
            return false;
        }
        if is_dir {
            let inside = format!("{full}/").into_bytes();
            let tracked_inside = self
                .tracked
                .range(inside.clone()..)
                .next()
                .is_some_and(|p| p.starts_with(&inside));
            !tracked_inside
        } else {
            !self.tracked.contains(full.as_bytes())
        }
    }
}

/// `path` with `/` separators, or `None` when it is not valid UTF-8 (git would not match it).
fn slash_path(path: &Path) -> Option<String> {
    let parts: Option<Vec<&str>> = path.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_repository_there_is_no_head() {
        let dir = std::env::temp_dir().join(format!("gantry-no-repo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // The temp dir is not inside a repository on any sane machine.
        if git2::Repository::discover(&dir).is_err() {
            assert_eq!(local_head(&dir), None);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn head_of_a_new_repository() {
        let dir = std::env::temp_dir().join(format!("gantry-local-head-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let repo = git2::Repository::init(&dir).unwrap();
        assert_eq!(local_head(&dir), None, "no commit yet");
        std::fs::write(dir.join("a"), "a").unwrap();
        let mut index = repo.index().unwrap();
        index.add_path(Path::new("a")).unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let oid = repo
            .commit(Some("HEAD"), &sig, &sig, "first", &tree, &[])
            .unwrap();
        let head = local_head(&dir).unwrap();
        assert_eq!(head.sha, oid.to_string());
        assert!(head.branch.is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn git(dir: &Path, args: &[&str]) {
        let status = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .status()
            .expect("git");
        assert!(status.success(), "git {args:?}");
    }

    #[test]
    fn the_origin_url_loses_its_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        git(root, &["init", "-q"]);
        std::fs::create_dir(root.join("sub")).unwrap();
        assert_eq!(origin_url(&root.join("sub")), None, "no origin yet");
        git(
            root,
            &[
                "remote",
                "add",
                "origin",
                "https://ci:ghp_s3cret@github.com/acme/backend.git",
            ],
        );
        assert_eq!(
            origin_url(&root.join("sub")).as_deref(),
            Some("https://***@github.com/acme/backend.git")
        );
    }

    #[test]
    fn ignores_follow_gitignore_except_for_tracked_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |path: &str, text: &str| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        git(root, &["init", "-q", "-b", "main"]);
        write(".gitignore", "target/\n*.log\n/build\nvendor/\n");
        write("src/app.log", "ignored\n");
        write("src/main.rs", "fn main() {}\n");
        write("target/debug/app", "binary\n");
        write("build", "a file named like a directory pattern\n");
        write("vendor/kept.txt", "tracked despite the pattern\n");
        write("keep.log", "tracked despite the pattern\n");
        git(root, &["add", ".gitignore", "src/main.rs"]);
        git(root, &["add", "-f", "vendor/kept.txt", "keep.log"]);
        write("sub/.gitignore", "local.txt\n");
        write("sub/local.txt", "ignored by a nested .gitignore\n");
        write("sub/other.txt", "untracked, not ignored\n");

        let ignores = GitIgnores::open(root).expect("a repository");
        let ignored = |path: &str, is_dir: bool| ignores.is_ignored(Path::new(path), is_dir);
        assert!(ignored("target", true));
        assert!(ignored("src/app.log", false));
        assert!(ignored("build", false), "/build matches files too");
        assert!(ignored("sub/local.txt", false));
        assert!(!ignored("src", true));
        assert!(!ignored("src/main.rs", false));
        assert!(!ignored("sub/other.txt", false));
        assert!(!ignored("vendor", true), "it holds a tracked file");
        assert!(!ignored("vendor/kept.txt", false));
        assert!(!ignored("keep.log", false));
        assert!(!ignored(".git", true));
        assert!(!ignored(".gitignore", false));

        // From a subdirectory, paths are relative to it.
        let sub = GitIgnores::open(&root.join("sub")).expect("a repository");
        assert!(sub.is_ignored(Path::new("local.txt"), false));
        assert!(!sub.is_ignored(Path::new("other.txt"), false));

        // A directory the repository ignores whole gets no rules from it.
        write("target/scratch/.gantry.yml", "stages: []\n");
        assert!(GitIgnores::open(&root.join("target/scratch")).is_none());

        let outside = tempfile::tempdir().unwrap();
        if git2::Repository::discover(outside.path()).is_err() {
            assert!(GitIgnores::open(outside.path()).is_none());
        }
    }
}
