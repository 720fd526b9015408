use clap::Args;

/// Arguments of `namewall replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {}

pub fn execute(_args: ReplayArgs) -> anyhow::Result<()> {
    anyhow::bail!("replay is not implemented yet")
}
