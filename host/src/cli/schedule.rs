//! `cairn schedule`: schedules on a server.

use super::client::{print_json, segment, Client};
use super::ClientArgs;
use clap::Subcommand;
use serde_json::{json, Value};
use std::process::ExitCode;

/// `cairn schedule` commands.
#[derive(Debug, Subcommand)]
pub(crate) enum ScheduleCommand {
    /// Create a schedule: runs of a workflow by a cron expression, an
    /// interval, or once at a time.
    ///
    /// Each firing starts a run with the id NAME-TIME (RFC 3339, UTC), so a
    /// firing retried after a crash is the same run.
    Create {
        /// The schedule's name (letters, digits, '-', '_').
        name: String,
        /// The deployed workflow it starts.
        #[arg(long)]
        workflow: String,
        /// A cron expression: 5 fields (minute hour day month weekday), or 6
        /// with seconds first; e.g. "0 3 * * *" for 03:00 every day.
        #[arg(long, conflicts_with_all = ["every", "start_at"])]
        cron: Option<String>,
        /// The cron expression's time zone (IANA name). Default UTC.
        #[arg(long, requires = "cron")]
        timezone: Option<String>,
        /// An interval instead: "15m", "1h", "1h 30m", at multiples of it
        /// since the Unix epoch (shifted by --offset).
        #[arg(long, conflicts_with = "start_at")]
        every: Option<String>,
        /// The interval's phase: --every 1h --offset 5m fires at 5 past.
        #[arg(long, requires = "every")]
        offset: Option<String>,
        /// One delayed start at this time (RFC 3339, e.g. 2026-12-08T09:00:00Z).
        #[arg(long)]
        start_at: Option<String>,
        /// The input of every run, as JSON text, or @FILE.
        #[arg(long, default_value = "null")]
        input: String,
        /// What a firing does while the previous run still runs: skip,
        /// buffer-one, allow-all or cancel-previous.
        #[arg(long, default_value = "skip")]
        overlap: String,
        /// Firings missed while no host ran the schedule are made up only
        /// if at most this old.
        #[arg(long, default_value = "1h")]
        catchup_window: String,
        /// Create it paused.
        #[arg(long)]
        paused: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the schedules.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a schedule: its spec, counts, latest and next firings.
    Describe {
        /// The schedule.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a schedule (the runs it started stay).
    Delete {
        /// The schedule.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Pause a schedule: it fires nothing until resumed.
    Pause {
        /// The schedule.
        name: String,
        /// Why (shown by describe and list).
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Resume a paused schedule from now (what was due meanwhile is not made up).
    Resume {
        /// The schedule.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Fire a schedule now (its overlap policy applies).
    Trigger {
        /// The schedule.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start the runs of every firing in a time range (a firing whose run
    /// exists is not started again).
    Backfill {
        /// The schedule.
        name: String,
        /// From this time (RFC 3339), inclusive.
        #[arg(long)]
        from: String,
        /// To this time (RFC 3339), inclusive.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub(crate) async fn run(command: ScheduleCommand) -> anyhow::Result<ExitCode> {
    match command {
        ScheduleCommand::Create {
            name,
            workflow,
            cron,
            timezone,
            every,
            offset,
            start_at,
            input,
            overlap,
            catchup_window,
            paused,
            client,
        } => {
            let input = super::read_json_arg("--input", &input)?;
            let input: Box<serde_json::value::RawValue> = serde_json::value::RawValue::from_string(input)?;
            let body = json!({
                "name": name, "workflow": workflow, "input": input, "cron": cron, "timezone": timezone,
                "every": every, "offset": offset, "start_at": start_at, "overlap": overlap,
                "catchup_window": catchup_window, "paused": paused,
            });
            let created = Client::new(&client).post_json("/schedules", &body).await?;
            show(&client, &created);
        }
        ScheduleCommand::List { client } => {
            let list = Client::new(&client).get("/schedules").await?;
            if client.json {
                print_json(&list);
            } else {
                let schedules = list["schedules"].as_array().cloned().unwrap_or_default();
                if schedules.is_empty() {
                    println!("no schedules; create one with `cairn schedule create`");
                }
                for s in schedules {
                    let state = match (s["paused"].as_bool(), s["done"].as_bool()) {
                        (Some(true), _) => format!("paused {}", s["note"].as_str().unwrap_or("")).trim().to_owned(),
                        (_, Some(true)) => "done".to_owned(),
                        _ => format!("next {}", s["next"][0].as_str().unwrap_or("-")),
                    };
                    println!(
                        "{}\t{}\t{}\t{state}",
                        s["name"].as_str().unwrap_or(""),
                        s["workflow"].as_str().unwrap_or(""),
                        when(&s)
                    );
                }
            }
        }
        ScheduleCommand::Describe { name, client } => {
            let s = Client::new(&client).get(&format!("/schedules/{}", segment(&name)?)).await?;
            show(&client, &s);
        }
        ScheduleCommand::Delete { name, client } => {
            let c = Client::new(&client);
            let body = c.send(c.http.delete(c.url(&format!("/schedules/{}", segment(&name)?)))).await?;
            match client.json {
                true => print_json(&body),
                false => println!("schedule {name} deleted (the runs it started stay)"),
            }
        }
        ScheduleCommand::Pause { name, note, client } => {
            let path = format!("/schedules/{}/pause", segment(&name)?);
            let s = Client::new(&client).post_json(&path, &json!({ "note": note })).await?;
            show(&client, &s);
        }
        ScheduleCommand::Resume { name, client } => {
            let s =
                Client::new(&client).post_json(&format!("/schedules/{}/resume", segment(&name)?), &json!({})).await?;
            show(&client, &s);
        }
        ScheduleCommand::Trigger { name, client } => {
            let path = format!("/schedules/{}/trigger", segment(&name)?);
            let fired = Client::new(&client).post_json(&path, &json!({})).await?;
            firings(&client, &fired);
        }
        ScheduleCommand::Backfill { name, from, to, client } => {
            let path = format!("/schedules/{}/backfill", segment(&name)?);
            let fired = Client::new(&client).post_json(&path, &json!({ "from": from, "to": to })).await?;
            firings(&client, &fired);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn when(s: &Value) -> String {
    let w = &s["when"];
    if let Some(cron) = w["cron"].as_str() {
        format!("cron {cron:?} {}", w["timezone"].as_str().unwrap_or("UTC"))
    } else if let Some(at) = w["start_at"].as_str() {
        format!("once at {at}")
    } else {
        let ms = |v: &Value| std::time::Duration::from_millis(v.as_u64().unwrap_or(0));
        match w["offset_ms"].as_u64() {
            Some(0) | None => format!("every {}", humantime::format_duration(ms(&w["every_ms"]))),
            Some(_) => format!(
                "every {} offset {}",
                humantime::format_duration(ms(&w["every_ms"])),
                humantime::format_duration(ms(&w["offset_ms"]))
            ),
        }
    }
}

fn show(client: &ClientArgs, s: &Value) {
    if client.json {
        return print_json(s);
    }
    let text = |k: &str| s[k].as_str().map(str::to_owned).unwrap_or_else(|| s[k].to_string());
    println!("schedule {}: {} of workflow {}", text("name"), when(s), text("workflow"));
    println!("  input {}  overlap {}  catch-up window {} ms", s["input"], text("overlap"), s["catchup_window_ms"]);
    if s["paused"] == true {
        println!("  paused {}", text("note"));
    }
    println!(
        "  started {}  skipped {}  missed {}  last run {}",
        s["started"],
        s["skipped"],
        s["missed"],
        text("last_run")
    );
    if let Some(buffered) = s["buffered"].as_str() {
        println!("  buffered firing {buffered} (waits for the last run to end)");
    }
    for f in s["recent"].as_array().into_iter().flatten() {
        println!(
            "  {} {} {}",
            f["at"].as_str().unwrap_or(""),
            f["outcome"].as_str().unwrap_or(""),
            f["run_id"].as_str().unwrap_or("")
        );
    }
    for next in s["next"].as_array().into_iter().flatten() {
        println!("  next {}", next.as_str().unwrap_or(""));
    }
}

fn firings(client: &ClientArgs, fired: &Value) {
    if client.json {
        return print_json(fired);
    }
    for f in fired["firings"].as_array().into_iter().flatten() {
        println!(
            "{} {} {}",
            f["at"].as_str().unwrap_or(""),
            f["outcome"].as_str().unwrap_or(""),
            f["run_id"].as_str().unwrap_or("")
        );
    }
}
