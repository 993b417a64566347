//! `ragq-loadgen` binary: parse flags, run, print the table, write JSON,
//! choose the exit code. See the library crate for everything else.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use ragq_loadgen::cli::Cli;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // Usage errors exit with code 2 (clap's convention).
    let cli = Cli::parse();
    let cfg = match cli.config() {
        Ok(cfg) => cfg,
        Err(msg) => Cli::command()
            .error(clap::error::ErrorKind::InvalidValue, msg)
            .exit(),
    };

    let report = match ragq_loadgen::run(cfg).await {
        Ok(report) => report,
        Err(err) => {
            eprintln!("ragq-loadgen: error: {err:#}");
            return ExitCode::from(1);
        }
    };

    print!("{}", report.table());
    if let Some(path) = &cli.json_out {
        let json = match serde_json::to_string_pretty(&report.to_json()) {
            Ok(json) => json,
            Err(err) => {
                eprintln!("ragq-loadgen: error: cannot encode the report: {err}");
                return ExitCode::from(1);
            }
        };
        if let Err(err) = std::fs::write(path, json + "\n") {
            eprintln!(
                "ragq-loadgen: error: cannot write {}: {err}",
                path.display()
            );
            return ExitCode::from(1);
        }
    }
    if cli.require_success && !report.all_succeeded() {
        eprintln!(
            "ragq-loadgen: {} failure(s) and --require-success is set",
            report.failures()
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
