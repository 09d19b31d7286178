//! `h8s net …`.

#[derive(clap::Subcommand)]
pub enum NetCommand {}

pub fn run(cmd: NetCommand) -> anyhow::Result<()> {
    match cmd {}
}
