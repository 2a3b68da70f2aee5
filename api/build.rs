//! Rebuilds the binary when a migration is added or changed: `sqlx::migrate!`
//! embeds `migrations/` at compile time, and cargo does not watch that
//! folder by itself (sqlx's documentation asks for this line).

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
