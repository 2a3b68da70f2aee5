//! Entry point of the `api` binary; everything else lives in the library.

use std::process::ExitCode;

use clap::Parser as _;

/// musl's allocator serves this many-threaded server far slower than
/// glibc's; mimalloc brings the static build level with the glibc one
/// (docs/performance.md).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ... and musl's `memcpy` takes about 50 ns for a copy of a few bytes, of
/// which a JSON response makes hundreds: musl-mem's replace it.
#[cfg(target_env = "musl")]
use musl_mem as _;

#[tokio::main]
async fn main() -> ExitCode {
    match api::cli::Cli::parse().run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
