//! The `cairn` command line. Embedded mode: the store is a directory
//! (`--data`, default `./cairn-data`) and everything runs in this process.

mod embedded;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Cairn: durable workflows in WebAssembly.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Limits for guest code.
#[derive(Debug, clap::Args)]
pub struct LimitArgs {
    /// Longest a workflow may compute without calling the host, in ms.
    #[arg(long, default_value_t = 10_000)]
    step_budget_ms: u64,
    /// Memory limit per guest instance, in MiB.
    #[arg(long, default_value_t = 256)]
    max_memory_mib: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a workflow to completion in this process and print its result.
    ///
    /// If the process dies mid-run, the same command with the same --data
    /// and --id resumes the run from its journal.
    Run {
        /// The workflow component (.wasm).
        workflow: PathBuf,
        /// An activity component the workflow calls, as NAME=FILE.wasm
        /// (its functions are then `NAME.<function>`). Repeatable.
        #[arg(long = "activity", value_name = "NAME=FILE")]
        activities: Vec<String>,
        /// The input, as JSON text, or @FILE to read it from a file.
        #[arg(long, default_value = "null")]
        input: String,
        /// The store directory.
        #[arg(long, default_value = "cairn-data", env = "CAIRN_DATA")]
        data: PathBuf,
        /// The run id; an existing id resumes that run.
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Print a run's journal.
    Journal {
        /// The run id.
        run_id: String,
        /// The store directory.
        #[arg(long, default_value = "cairn-data", env = "CAIRN_DATA")]
        data: PathBuf,
        /// One JSON object per entry instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-execute a run from its journal without side effects and check
    /// that the code reproduces it. Exit 0: identical; 3: diverged.
    Replay {
        /// The run id.
        run_id: String,
        /// The store directory.
        #[arg(long, default_value = "cairn-data", env = "CAIRN_DATA")]
        data: PathBuf,
        /// Check this component instead of the one the run was started with.
        #[arg(long = "with", value_name = "FILE.wasm")]
        with: Option<PathBuf>,
        #[command(flatten)]
        limits: LimitArgs,
    },
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run {
            workflow,
            activities,
            input,
            data,
            id,
            limits,
        } => embedded::run(&workflow, &activities, &input, &data, id, &limits).await,
        Command::Journal { run_id, data, json } => embedded::journal(&run_id, &data, json),
        Command::Replay {
            run_id,
            data,
            with,
            limits,
        } => embedded::replay(&run_id, &data, with.as_deref(), &limits).await,
    }
}
