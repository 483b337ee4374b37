//! Runs every workload of the comparison at a tiny size, so that the harness cannot rot:
//! each contender must get through each workload it supports, and the report and plots must
//! be written. Redis is skipped when `redis-server` is not installed.

use std::process::Command;

#[test]
fn every_workload_runs_at_a_tiny_size() {
    let out = std::env::temp_dir().join(format!("streamlog-compare-tiny-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(env!("CARGO_BIN_EXE_streamlog-compare"))
        .args(["--tiny", "--out"])
        .arg(&out)
        .output()
        .expect("run the harness");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "the harness failed:\n{stderr}");
    let report = std::fs::read_to_string(out.join("results.md")).expect("the report");
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), report.trim(), "stdout carries the report");
    assert!(!report.contains(" failed: "), "a contender failed a workload:\n{report}");
    for heading in ["#### 1.", "#### 2.", "#### 3.", "#### 4.", "#### 5.", "#### Targets"] {
        assert!(report.contains(heading), "{heading} missing from the report:\n{report}");
    }
    let mut contenders = vec!["streamlog", "streamlog (fsync)", "crossbeam-channel", "commitlog", "SQLite (WAL)"];
    if which("redis-server") {
        contenders.push("Redis Streams");
    } else {
        assert!(report.contains("Redis Streams skipped"), "a skipped Redis is reported");
    }
    for contender in contenders {
        assert!(report.contains(&format!(" {contender} |")), "{contender} missing from the report:\n{report}");
    }
    for row in ["| processes |", "| partitions 100 |", "| threads 4 |", "| log MiB 4 |", "| value bytes 1048576 |"] {
        assert!(report.contains(row), "{row} missing from the report:\n{report}");
    }
    for plot in ["one-to-one.svg", "latency.svg", "record-size.svg", "partitions.svg", "threads.svg"] {
        let svg = std::fs::read_to_string(out.join(plot)).unwrap_or_default();
        assert!(svg.contains("<svg") && svg.contains("streamlog"), "{plot} is not a plot of streamlog");
    }
    std::fs::remove_dir_all(&out).unwrap();
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
