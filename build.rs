//! The migrations are embedded in the binary (`sqlx::migrate!`): rebuild when a file under
//! `migrations/` is added or changed, not only when Rust code is.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
