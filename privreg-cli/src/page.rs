//! `privreg status --open`: the daemon's status page in the browser, through a one-time link
//! (`POST /-/open` with the local token; the link works once, for about a minute, and the local
//! token never goes into a URL).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::Dirs;

#[derive(Args)]
pub struct StatusArgs {
    /// Open the status page (`/-/`) in the browser instead of printing the status.
    #[arg(long)]
    pub open: bool,
    /// With --open: print the one-time link to stdout instead of starting a browser.
    #[arg(long, requires = "open")]
    pub print: bool,
}

/// Asks the daemon for a one-time link to its status page: (URL, seconds it stays valid).
async fn link(dirs: &Dirs) -> anyhow::Result<(String, u64)> {
    let link = crate::autostart::connect(dirs, Duration::from_secs(30))
        .await?
        .page_link()
        .await?;
    Ok((link.url, link.expires_in_secs))
}

pub(crate) async fn open(dirs: &Dirs, print: bool) -> anyhow::Result<ExitCode> {
    let (url, secs) = link(dirs).await?;
    if print {
        println!("{url}");
        return Ok(ExitCode::SUCCESS);
    }
    let opened = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || open::that(&url))
            .await
            .context("starting a browser")?
    };
    match opened {
        Ok(()) => eprintln!("opened privreg's status page in the browser"),
        Err(e) => {
            eprintln!(
                "privreg: cannot start a browser ({e}); open this link within {secs}s (it works once):"
            );
            println!("{url}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
