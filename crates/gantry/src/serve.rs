//! `gantry serve`: configuration, then the server until SIGINT or SIGTERM.

use std::path::Path;
use std::process::ExitCode;

use crate::exit;

pub fn main(config: Option<&Path>) -> ExitCode {
    let env = |name: &str| std::env::var(name).ok();
    let config = match gantry_config::load(config, &env) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("error: the configuration is invalid; the server did not start");
            return ExitCode::from(exit::ERROR);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    runtime.block_on(async {
        let server = match gantry_server::Server::start(config).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(exit::ERROR);
            }
        };
        eprintln!("gantry listening on http://{}", server.addr);
        match &server.token_file {
            Some(path) => eprintln!("admin token: {} (send it as 'Authorization: Bearer <token>', or set GANTRY_TOKEN for the CLI)", path.display()),
            None => eprintln!("admin token: from GANTRY_ADMIN_TOKEN"),
        }
        match server.serve(shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(exit::ERROR)
            }
        }
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("shutting down: cancelling runs in progress");
}
