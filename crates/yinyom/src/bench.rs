//! `yinyom bench`: throughput and latency against ceilings measured in the
//! same run.

use std::process::ExitCode;

#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

pub async fn run(_args: BenchArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    Err("not yet".into())
}
