//! `sqlx::migrate!` embeds the files of `migrations/sqlite/` but cannot tell Cargo to watch the
//! folder, so a new migration would not rebuild this crate without this.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations/sqlite");
}
