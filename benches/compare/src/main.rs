//! Side-by-side benchmarks of streamlog against what users would pick instead: an in-memory
//! channel, the `commitlog` crate, SQLite and Redis Streams. Prints a Markdown report and
//! writes it, with SVG plots, to `benches/compare/results/`.
//!
//! ```text
//! cargo run --release -p streamlog-compare              # the full run (about 15 minutes)
//! cargo run --release -p streamlog-compare -- --tiny    # every workload at a tiny size
//!     options: --only 1,3,5   --contenders streamlog,SQLite   --records N   --out DIR   --scratch DIR
//! ```

mod contender;
mod contenders;
mod drive;
mod measure;
mod plot;
mod processes;
mod report;
mod results;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;

use results::Results;
use workloads::{Bench, Scale};

#[global_allocator]
static ALLOCATOR: measure::CountingAllocator = measure::CountingAllocator;

struct Options {
    tiny: bool,
    only: Vec<u8>,
    /// Contenders whose name contains one of these; all when empty.
    contenders: Vec<String>,
    /// Records for workloads 1 and 2, instead of the scale's.
    records: Option<u64>,
    out: PathBuf,
    scratch: PathBuf,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        tiny: false,
        only: vec![1, 2, 3, 4, 5],
        contenders: Vec::new(),
        records: None,
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results"),
        scratch: std::env::temp_dir().join(format!("streamlog-compare-{}", std::process::id())),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--tiny" => options.tiny = true,
            "--only" => {
                options.only = value()?
                    .split(',')
                    .map(|n| n.trim().parse().map_err(|_| format!("--only: bad workload {n:?}")))
                    .collect::<Result<_, _>>()?
            }
            "--contenders" => options.contenders = value()?.split(',').map(str::to_owned).collect(),
            "--records" => options.records = Some(value()?.parse().map_err(|_| format!("{arg} needs a number"))?),
            "--out" => options.out = PathBuf::from(value()?),
            "--scratch" => options.scratch = PathBuf::from(value()?),
            _ => return Err(format!("unknown argument {arg:?}; see the top of benches/compare/src/main.rs")),
        }
    }
    Ok(options)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "child") {
        return match processes::child(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("child: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let options = match parse(&args) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    raise_open_file_limit();
    let mut scale = if options.tiny { Scale::tiny() } else { Scale::full() };
    scale.records = options.records.unwrap_or(scale.records);
    let mut chosen = contenders::all();
    chosen.retain(|c| options.contenders.is_empty() || options.contenders.iter().any(|name| c.name().contains(name.as_str())));
    let bench = Bench { contenders: chosen, scale, scratch: options.scratch.clone() };
    let mut results = Results::default();
    if !contenders::redis::redis_server_available() {
        results.note(format!("Redis Streams skipped: redis-server is not installed ({})", contenders::redis::INSTALL_HINT));
    }
    let workloads: [(u8, workloads::Workload); 5] = [
        (1, workloads::one_to_one),
        (2, workloads::fan_in_fan_out),
        (3, workloads::fsync_before_ack),
        (4, workloads::steady_latency),
        (5, workloads::growth),
    ];
    for (number, workload) in workloads {
        if options.only.contains(&number) {
            workload(&bench, &mut results);
        }
    }
    let _ = std::fs::remove_dir_all(&options.scratch);
    let command = format!("cargo run --release -p streamlog-compare --{}", if options.tiny { " --tiny" } else { "" });
    let report = report::markdown(&results, &bench.scale, command.trim_end_matches(" --"));
    println!("{report}");
    let written = std::fs::create_dir_all(&options.out)
        .and_then(|()| std::fs::write(options.out.join("results.md"), &report))
        .and_then(|()| report::plots(&results, &options.out));
    match written {
        Ok(plots) => {
            eprintln!("wrote {} and {}", options.out.join("results.md").display(), plots.join(", "));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("could not write the report into {}: {error}", options.out.display());
            ExitCode::FAILURE
        }
    }
}

/// 10,000 partitions need about 30,000 open files: raise the limit as far as allowed (root may
/// raise the hard limit too).
fn raise_open_file_limit() {
    const WANTED: libc::rlim_t = 1 << 16;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct on this stack.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= WANTED {
            return;
        }
        let raised = libc::rlimit { rlim_cur: WANTED, rlim_max: limit.rlim_max.max(WANTED) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
