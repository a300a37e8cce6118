//! Per-project bare mirrors: fetching from the forge, reading commits, checking out trees.

use std::cell::RefCell;
use std::fs::File;
use std::path::{Path, PathBuf};

use git2::build::CheckoutBuilder;
use git2::{
    AutotagOption, Commit, ErrorClass, ErrorCode, FetchOptions, FetchPrune, ObjectType, Oid,
    RemoteCallbacks, Repository, RepositoryInitOptions,
};
use tracing::{debug, info};

use crate::credentials::{Credentials, CredentialsCallback};
use crate::error::{Error, Result, redact_url, scrub, url_secret};
use crate::host_key::HostKeyCheck;

/// libgit2's `GIT_FETCH_DEPTH_UNSHALLOW`: fetch the history a shallow repository lacks.
const DEPTH_UNSHALLOW: i32 = i32::MAX;

/// Refspecs of a full fetch: every branch and tag, under the same names (a mirror).
const ALL_REFS: [&str; 2] = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

/// A bare repository that mirrors one project's remote, reused by every run of the project.
///
/// Refs are stored under the remote's names (`refs/heads/main`, `refs/tags/v1`). Fetches into one
/// mirror are serialized by a lock file, across processes too; reading and checking out never
/// write to the mirror and may run at any time, also during a fetch. `Mirror` holds only a path,
/// so it is cheap to clone and share between threads.
#[derive(Clone, Debug)]
pub struct Mirror {
    path: PathBuf,
}

/// The facts about a commit that a run shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// Full hex sha of the commit (also when it was looked up through an annotated tag).
    pub sha: String,
    /// The first 7 hex digits, as forges show them.
    pub short_sha: String,
    /// The first line of the commit message.
    pub message: String,
    /// The author's name.
    pub author: String,
}

impl Mirror {
    /// Opens the bare repository at `path`, or creates one (and its parent directories) if
    /// `path` does not exist or is an empty directory.
    pub fn open_or_init(path: &Path) -> Result<Mirror> {
        let is_empty_or_missing = match std::fs::read_dir(path) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                return Err(Error::git(
                    format!("open mirror {}", path.display()),
                    e.to_string(),
                ));
            }
        };
        if is_empty_or_missing {
            // Two runs of a new project may create its mirror at the same moment: build it
            // beside the final path and rename it into place, so nobody ever opens a half-made
            // repository; whoever loses the race uses the winner's.
            let parent = path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(parent).map_err(|e| {
                Error::git(format!("create mirror {}", path.display()), e.to_string())
            })?;
            let staging = parent.join(format!(
                ".{}.init-{}-{:?}",
                path.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("mirror"),
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&staging);
            Repository::init_opts(
                &staging,
                RepositoryInitOptions::new().bare(true).mkpath(true),
            )
            .map_err(|e| Error::git(format!("create mirror {}", path.display()), e.message()))?;
            let _ = std::fs::remove_dir(path); // an empty directory: rename cannot replace it
            match std::fs::rename(&staging, path) {
                Ok(()) => debug!(mirror = %path.display(), "created mirror"),
                Err(_) => {
                    let _ = std::fs::remove_dir_all(&staging);
                    Repository::open_bare(path).map_err(|e| {
                        Error::git(format!("open mirror {}", path.display()), e.message())
                    })?;
                }
            }
        } else {
            Repository::open_bare(path).map_err(|e| {
                Error::git(
                    format!("open mirror {}", path.display()),
                    format!("not a bare git repository ({})", e.message()),
                )
            })?;
        }
        Ok(Mirror {
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Brings `sha` and/or the ref `refname` from `url` into the mirror.
    ///
    /// `refname` is a full ref (`refs/heads/main`, `refs/tags/v1`; a bare name means a branch)
    /// and is fetched with depth 1 into the same name. If `sha` is given and then still missing,
    /// because it is no longer the tip, that commit is fetched by id, and if the server refuses
    /// that, every branch and tag is fetched with full history. With neither, every branch and
    /// tag is fetched. If `sha` is already in the mirror (a re-run), nothing is fetched.
    ///
    /// `file://` URLs and local paths are always fetched with full history: libgit2's local
    /// transport cannot fetch shallowly, and copying local objects is cheap anyway.
    ///
    /// Errors: [`Error::Auth`] when credentials are refused or missing; [`Error::NotFound`] when
    /// the repository, `refname` (with no `sha`) or `sha` does not exist at `url`.
    pub fn fetch(
        &self,
        url: &str,
        creds: &Credentials,
        refname: Option<&str>,
        sha: Option<&str>,
    ) -> Result<()> {
        let wanted = sha.map(parse_full_sha).transpose()?;
        let refname = refname.map(full_refname).transpose()?;
        let _lock = self.lock()?;
        let repo = self.open()?;
        if let Some(oid) = wanted
            && has_commit(&repo, oid)
        {
            debug!(url = %redact_url(url), sha, "commit already in the mirror; not fetching");
            return Ok(());
        }
        let remote = RemoteSpec::new(url, creds);

        if let Some(refname) = &refname {
            let refspec = format!("+{refname}:{refname}");
            let fetched = remote.fetch(&repo, &[refspec.as_str()], remote.shallow_depth(), false);
            match fetched {
                Ok(advertised) if advertised.iter().any(|name| name == refname) => {}
                Ok(_) => {
                    // Gone from the remote: drop the stale copy so nothing resolves to it.
                    if let Ok(mut stale) = repo.find_reference(refname) {
                        let _ = stale.delete();
                    }
                    if wanted.is_none() {
                        return Err(Error::not_found(format!(
                            "{refname} at {}",
                            remote.shown_url
                        )));
                    }
                }
                Err(failure) if !failure.may_fall_back() => {
                    return Err(failure.into_error(&remote, &format!("fetch {refname}")));
                }
                Err(failure) => {
                    debug!(url = %remote.shown_url, refname, error = %failure.describe(&remote), "shallow fetch refused; fetching everything");
                    remote
                        .fetch_all(&repo)
                        .map_err(|f| f.into_error(&remote, "fetch all branches and tags"))?;
                }
            }
        }

        let Some(oid) = wanted else {
            if refname.is_none() {
                remote
                    .fetch_all(&repo)
                    .map_err(|f| f.into_error(&remote, "fetch all branches and tags"))?;
            }
            return Ok(());
        };
        if has_commit(&repo, oid) {
            return Ok(());
        }
        let sha = oid.to_string();
        match remote.fetch(&repo, &[sha.as_str()], remote.shallow_depth(), false) {
            Ok(_) => {}
            Err(failure) if !failure.may_fall_back() => {
                return Err(failure.into_error(&remote, &format!("fetch commit {sha}")));
            }
            Err(failure) => {
                debug!(url = %remote.shown_url, sha, error = %failure.describe(&remote), "fetch by id refused");
            }
        }
        if has_commit(&repo, oid) {
            return Ok(());
        }
        debug!(url = %remote.shown_url, sha, "commit not fetched by id; fetching everything");
        remote
            .fetch_all(&repo)
            .map_err(|f| f.into_error(&remote, "fetch all branches and tags"))?;
        if has_commit(&repo, oid) {
            Ok(())
        } else {
            Err(Error::not_found(format!(
                "commit {sha} at {}",
                remote.shown_url
            )))
        }
    }

    /// Fetches the tip of `branch` (`main` or `refs/heads/main`) from `url` and returns its sha,
    /// for runs started by hand.
    pub fn resolve(&self, url: &str, creds: &Credentials, branch: &str) -> Result<String> {
        let refname = full_refname(branch)?;
        self.fetch(url, creds, Some(&refname), None)?;
        let repo = self.open()?;
        let oid = repo
            .refname_to_id(&refname)
            .map_err(|_| Error::not_found(format!("{refname} at {}", redact_url(url))))?;
        let commit = peel_to_commit(&repo, oid, &refname)?;
        Ok(commit.id().to_string())
    }

    /// The text of the file at `path` in commit `sha`, or `None` if the commit has no such file.
    pub fn read_file(&self, sha: &str, path: &str) -> Result<Option<String>> {
        let repo = self.open()?;
        let commit = find_commit(&repo, sha)?;
        let context = || format!("read {path} at {}", short(&commit.id()));
        let tree = commit
            .tree()
            .map_err(|e| Error::git(context(), e.message()))?;
        let entry = match tree.get_path(Path::new(path.trim_start_matches('/'))) {
            Ok(entry) => entry,
            Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(Error::git(context(), e.message())),
        };
        let object = entry
            .to_object(&repo)
            .map_err(|e| Error::git(context(), e.message()))?;
        let blob = match object.into_blob() {
            Ok(blob) => blob,
            Err(object) => {
                let kind = object.kind().map_or("not a file", |kind| match kind {
                    ObjectType::Tree => "a directory, not a file",
                    ObjectType::Commit => "a submodule, not a file",
                    _ => "not a file",
                });
                return Err(Error::git(context(), format!("{path} is {kind}")));
            }
        };
        String::from_utf8(blob.content().to_vec())
            .map(Some)
            .map_err(|_| Error::git(context(), "the file is not valid UTF-8"))
    }

    /// Facts about commit `sha` (a full or abbreviated sha, or an annotated tag's).
    pub fn commit_info(&self, sha: &str) -> Result<CommitInfo> {
        let repo = self.open()?;
        Ok(commit_info(&find_commit(&repo, sha)?))
    }

    /// Writes the tree of commit `sha` into `dest`, which must be missing or empty, and returns
    /// the commit's facts.
    ///
    /// `dest` gets the plain tree: no `.git`, and no submodules or LFS content. A run's stages
    /// get the commit's identity from the run's variables, not from git; and without a `.git`
    /// in the workspace, nothing a stage does can reach or change the mirror.
    pub fn checkout(&self, sha: &str, dest: &Path) -> Result<CommitInfo> {
        let repo = self.open()?;
        let commit = find_commit(&repo, sha)?;
        let context = || format!("check out {} into {}", short(&commit.id()), dest.display());
        match std::fs::read_dir(dest) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(Error::git(context(), "the directory is not empty"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dest).map_err(|e| Error::git(context(), e.to_string()))?;
            }
            Err(e) => return Err(Error::git(context(), e.to_string())),
        }
        let tree = commit
            .tree()
            .map_err(|e| Error::git(context(), e.message()))?;
        let mut checkout = CheckoutBuilder::new();
        // Into `dest`, not into the mirror, which has no work tree; and without touching the
        // mirror's index, so checkouts of the same mirror can run side by side.
        checkout
            .target_dir(dest)
            .force()
            .recreate_missing(true)
            .update_index(false);
        repo.checkout_tree(tree.as_object(), Some(&mut checkout))
            .map_err(|e| Error::git(context(), e.message()))?;
        Ok(commit_info(&commit))
    }

    fn open(&self) -> Result<Repository> {
        Repository::open_bare(&self.path)
            .map_err(|e| Error::git(format!("open mirror {}", self.path.display()), e.message()))
    }

    /// Serializes fetches into this mirror: libgit2 fails instead of waiting when another fetch
    /// holds a ref's lock. Released when the file is closed.
    fn lock(&self) -> Result<File> {
        let path = self.path.join("gantry-fetch.lock");
        let context = || format!("lock mirror {}", self.path.display());
        let file = File::create(&path).map_err(|e| Error::git(context(), e.to_string()))?;
        file.lock()
            .map_err(|e| Error::git(context(), e.to_string()))?;
        Ok(file)
    }
}

/// One remote and the credentials for it, for the fetches of one [`Mirror::fetch`] call.
struct RemoteSpec<'a> {
    url: &'a str,
    /// `url` without user info, for messages and logs.
    shown_url: String,
    creds: &'a Credentials,
    is_local: bool,
}

impl<'a> RemoteSpec<'a> {
    fn new(url: &'a str, creds: &'a Credentials) -> Self {
        RemoteSpec {
            url,
            shown_url: redact_url(url),
            creds,
            // libgit2 uses its local transport for these (see `transport_find_fn`).
            is_local: url.starts_with("file://")
                || (!url.contains("://") && Path::new(url).is_dir()),
        }
    }

    fn shallow_depth(&self) -> i32 {
        if self.is_local { 0 } else { 1 }
    }

    /// Every branch and tag with full history; unshallows a mirror made shallow by earlier
    /// fetches, so old commits become reachable. Prunes branches and tags the remote deleted.
    fn fetch_all(&self, repo: &Repository) -> Result<Vec<String>, FetchFailure> {
        let depth = if repo.is_shallow() && !self.is_local {
            DEPTH_UNSHALLOW
        } else {
            0
        };
        self.fetch(repo, &ALL_REFS, depth, true)
    }

    /// Fetches `refspecs` and returns the names of the refs the remote advertised.
    fn fetch(
        &self,
        repo: &Repository,
        refspecs: &[&str],
        depth: i32,
        prune: bool,
    ) -> Result<Vec<String>, FetchFailure> {
        let callback = RefCell::new(CredentialsCallback::new(self.creds));
        let host_key = self
            .creds
            .known_hosts
            .as_deref()
            .map(|file| RefCell::new(HostKeyCheck::new(file, self.url)));
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(|_url, username_from_url, allowed| {
            callback.borrow_mut().call(username_from_url, allowed)
        });
        if let Some(check) = &host_key {
            callbacks.certificate_check(|cert, host| check.borrow_mut().call(cert, host));
        }
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(callbacks)
            .depth(depth)
            .download_tags(AutotagOption::None)
            .update_fetchhead(false)
            .prune(if prune {
                FetchPrune::On
            } else {
                FetchPrune::Off
            });

        let mut remote = repo.remote_anonymous(self.url).map_err(FetchFailure::Git)?;
        let result = remote.fetch(refspecs, Some(&mut options), None);
        drop(options);
        if let Some(problem) = host_key.and_then(|check| check.into_inner().problem) {
            return Err(FetchFailure::Auth(problem));
        }
        if let Some(problem) = callback.into_inner().problem {
            return Err(FetchFailure::Auth(problem.message().to_owned()));
        }
        result.map_err(FetchFailure::Git)?;
        let stats = remote.stats();
        info!(
            url = %self.shown_url,
            refspecs = ?refspecs,
            depth,
            received_objects = stats.received_objects(),
            received_bytes = stats.received_bytes(),
            "fetched"
        );
        let advertised = remote
            .list()
            .map_err(FetchFailure::Git)?
            .iter()
            .map(|head| head.name().to_owned())
            .collect();
        Ok(advertised)
    }

    fn secrets(&self) -> Vec<&str> {
        let mut secrets: Vec<&str> = self.creds.token.iter().map(String::as_str).collect();
        secrets.extend(url_secret(self.url));
        secrets
    }
}

#[derive(Debug)]
enum FetchFailure {
    /// The credentials callback gave up; the message says why.
    Auth(String),
    Git(git2::Error),
}

impl FetchFailure {
    /// The failure's message, scrubbed, for logs.
    fn describe(&self, remote: &RemoteSpec<'_>) -> String {
        match self {
            FetchFailure::Auth(message) => message.clone(),
            FetchFailure::Git(e) => scrub(e.message(), &remote.secrets()),
        }
    }

    /// Whether a less demanding fetch may succeed where this one failed: not when the
    /// credentials are wrong, the repository is missing or the server cannot be reached.
    fn may_fall_back(&self) -> bool {
        match self {
            FetchFailure::Auth(_) => false,
            FetchFailure::Git(e) => {
                !(is_auth_error(e) || is_http_status(e, 404) || is_connection_error(e))
            }
        }
    }

    fn into_error(self, remote: &RemoteSpec<'_>, doing: &str) -> Error {
        let url = remote.shown_url.clone();
        let e = match self {
            FetchFailure::Auth(message) => return Error::Auth { url, message },
            FetchFailure::Git(e) => e,
        };
        let message = scrub(e.message(), &remote.secrets());
        if is_auth_error(&e) {
            let message = if is_http_status(&e, 403) {
                "the server denied access (HTTP 403)".to_owned()
            } else {
                message
            };
            Error::Auth { url, message }
        } else if is_http_status(&e, 404) {
            Error::not_found(format!(
                "repository {url} (or the credentials cannot see it)"
            ))
        } else {
            Error::git(format!("{doing} from {url}"), message)
        }
    }
}

fn is_auth_error(e: &git2::Error) -> bool {
    e.code() == ErrorCode::Auth || is_http_status(e, 401) || is_http_status(e, 403)
}

/// libgit2 reports unexpected HTTP answers only in its message (`unexpected http status code:
/// 404`), with no code of their own.
fn is_http_status(e: &git2::Error, status: u16) -> bool {
    e.class() == ErrorClass::Http && e.message().ends_with(&format!("status code: {status}"))
}

fn is_connection_error(e: &git2::Error) -> bool {
    matches!(
        e.class(),
        ErrorClass::Net | ErrorClass::Os | ErrorClass::Ssl
    ) && (e.message().starts_with("failed to connect")
        || e.message().starts_with("failed to resolve")
        || e.message().contains("Connection refused"))
}

/// `main` → `refs/heads/main`; full ref names are kept.
fn full_refname(name: &str) -> Result<String> {
    let full = if name.starts_with("refs/") {
        name.to_owned()
    } else {
        format!("refs/heads/{name}")
    };
    if git2::Reference::is_valid_name(&full) {
        Ok(full)
    } else {
        Err(Error::git(
            format!("fetch {name:?}"),
            "not a valid branch or ref name",
        ))
    }
}

/// A full 40-digit hex sha, as webhooks send; fetching needs the whole id.
fn parse_full_sha(sha: &str) -> Result<Oid> {
    if sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        Oid::from_str(sha).map_err(|e| Error::git(format!("parse sha {sha:?}"), e.message()))
    } else {
        Err(Error::not_found(format!(
            "commit {sha:?} (not a full 40-digit hex sha)"
        )))
    }
}

fn has_commit(repo: &Repository, oid: Oid) -> bool {
    repo.find_object(oid, None)
        .and_then(|object| object.peel_to_commit())
        .is_ok()
}

/// The commit a full or abbreviated sha names, through an annotated tag if it names one.
fn find_commit<'r>(repo: &'r Repository, sha: &str) -> Result<Commit<'r>> {
    let not_found = || Error::not_found(format!("commit {sha}"));
    if !(4..=40).contains(&sha.len()) || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::not_found(format!("commit {sha:?} (not a hex sha)")));
    }
    let object = if sha.len() == 40 {
        let oid = Oid::from_str(sha).map_err(|_| not_found())?;
        repo.find_object(oid, None)
    } else {
        repo.find_object_by_prefix(sha, None)
    };
    match object {
        Ok(object) => peel_to_commit(repo, object.id(), sha),
        Err(e) if e.code() == ErrorCode::Ambiguous => Err(Error::git(
            format!("look up commit {sha}"),
            "the abbreviated sha is ambiguous; use more digits",
        )),
        Err(_) => Err(not_found()),
    }
}

fn peel_to_commit<'r>(repo: &'r Repository, oid: Oid, name: &str) -> Result<Commit<'r>> {
    repo.find_object(oid, None)
        .and_then(|object| object.peel_to_commit())
        .map_err(|e| Error::git(format!("look up commit {name}"), e.message()))
}

fn commit_info(commit: &Commit<'_>) -> CommitInfo {
    let message = String::from_utf8_lossy(commit.message_bytes());
    let author = commit.author();
    CommitInfo {
        sha: commit.id().to_string(),
        short_sha: short(&commit.id()),
        message: message.lines().next().unwrap_or_default().trim().to_owned(),
        author: String::from_utf8_lossy(author.name_bytes()).into_owned(),
    }
}

fn short(oid: &Oid) -> String {
    let mut sha = oid.to_string();
    sha.truncate(7);
    sha
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names() {
        assert_eq!(full_refname("main").unwrap(), "refs/heads/main");
        assert_eq!(full_refname("refs/tags/v1").unwrap(), "refs/tags/v1");
        assert!(full_refname("bad..name").is_err());
    }

    #[test]
    fn full_shas_only() {
        assert!(parse_full_sha(&"a".repeat(40)).is_ok());
        assert!(matches!(
            parse_full_sha("abc1234"),
            Err(Error::NotFound { .. })
        ));
        assert!(parse_full_sha(&"g".repeat(40)).is_err());
    }
}
