//! `cairn bench --quick` still runs every row and reports every key. This
//! checks the benchmark works, not how fast anything is: no figure is
//! compared with a threshold.

use crate::support::*;

#[test]
fn the_quick_benchmark_reports_every_row() {
    let output = cairn().args(["bench", "--quick", "--json", "--guests"]).arg(guests()).output().unwrap();
    let report = json(&expect_success(&output));
    for key in [
        "w10_embedded_wps",
        "w10_http_wps",
        "w10_http_full_store_wps",
        "w10_p50_ms",
        "w10_p99_ms",
        "step_overhead_us",
        "step_overhead_nofsync_us",
        "replay_entries_per_s",
        "instantiate_us",
        "parked_runs",
        "parked_rss_mib",
        "cold_start_ms",
    ] {
        assert!(report[key].as_f64().is_some_and(|v| v > 0.0), "{key} missing or not positive: {report}");
    }
    assert_eq!(report["parked_runs"], 10_000);
}
