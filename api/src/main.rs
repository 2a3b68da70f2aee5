//! Entry point of the `api` binary; everything else lives in the library.

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    match api::cli::Cli::parse().run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            // `api db status`: 3 says "no such instance", so that scripts
            // can tell it from a failure to look.
            match error.downcast_ref::<api::rds::RdsError>() {
                Some(api::rds::RdsError::NotFound { .. }) => ExitCode::from(3),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
