//! The hyperctl-style pod commands: run, exec, ps, logs, stop, rm, image.

#[derive(clap::Subcommand)]
pub enum PodCommand {}

pub fn run(cmd: PodCommand) -> anyhow::Result<()> {
    match cmd {}
}
