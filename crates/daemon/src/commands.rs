//! Which commands this guestd has: one `register` line per command.

use std::sync::Arc;
use std::time::Duration;

use guestd_core::{CommandPolicy, DispatchError, Dispatcher, DispatcherBuilder, Env};
use guestd_handlers::{
    AgentUpdateHandler, FeaturesHandler, FileInjectHandler, InjectFileHandler, KmsActivateHandler,
    ResetNetworkHandler, VersionHandler,
};

use crate::config::Config;

/// Build the dispatcher with every command, the command policy and the timeouts.
pub fn build_dispatcher(config: &Config, env: Env) -> Result<Dispatcher, DispatchError> {
    let builder = DispatcherBuilder::new()
        .register(VersionHandler)?
        .register(FeaturesHandler)?;
    let builder = guestd_handlers::register_password_commands(builder, config.password.clone())?
        .register(ResetNetworkHandler::new(config.network.clone()))?
        .register(InjectFileHandler::new(config.inject.clone()))?
        .register(FileInjectHandler::new(config.inject.clone()))?
        .register(AgentUpdateHandler::new(config.update.clone()))?
        .register(KmsActivateHandler)?;
    // guest-exec's programs would run on this machine even under --root: contained like the
    // command runner ([sandbox] allow_effects = ["other"] lets them run).
    let spawner = guestd_core::process::contain(
        &env.root,
        Arc::new(guestd_core::SystemSpawner),
        &config.sandbox,
    );
    let builder = guestd_handlers::qga::register_with(builder, &config.qga, spawner)?;

    let commands = &config.commands;
    // guest-exec and guest-file-* stay off unless [qga] says what they may reach, whatever
    // [commands] enables.
    let mut disabled = commands.disabled.clone();
    for name in guestd_handlers::qga::disabled_by_config(&config.qga) {
        if commands.enabled.iter().flatten().any(|n| n == name) {
            let key = if name.starts_with("guest-exec") {
                "exec_allow"
            } else {
                "file_allow"
            };
            tracing::warn!(
                command = name,
                "[commands] enabled names it, but it stays disabled: [qga] {key} is empty"
            );
        }
        disabled.push(name.to_string());
    }
    let mut builder = builder
        .policy(CommandPolicy {
            enabled: commands.enabled.clone(),
            disabled,
        })
        .default_timeout(Duration::from_secs(commands.timeout_secs.max(1)));
    for (name, secs) in &commands.timeouts {
        builder = builder.timeout(name.clone(), Duration::from_secs((*secs).max(1)));
    }
    Ok(builder.build(env))
}
