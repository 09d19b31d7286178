//! `h8s image pull|import|ls|rm`.

#[derive(clap::Subcommand)]
pub enum ImageCommand {}

pub fn run(cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {}
}
