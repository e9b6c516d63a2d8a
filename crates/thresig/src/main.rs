//! The `thresig` command line.
#![forbid(unsafe_code)]

mod demo;
mod psbt;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Threshold Schnorr (FROST) signer for Bitcoin Taproot custody.
#[derive(Parser)]
#[command(name = "thresig", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a DKG and a threshold Taproot key-path signature in one process.
    Demo(demo::DemoArgs),
    /// Build, inspect and finalize Taproot key-path PSBTs.
    Psbt(psbt::PsbtArgs),
}

/// The wall clock in Unix seconds (0 if it reads before 1970).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match Cli::parse().command {
        Command::Demo(args) => demo::main(&args, &mut rand_core::OsRng),
        Command::Psbt(args) => psbt::main(&args, unix_now()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
