//! `h8s store …`.

#[derive(clap::Subcommand)]
pub enum StoreCommand {}

pub fn run(cmd: StoreCommand) -> anyhow::Result<()> {
    match cmd {}
}
