//! Which commands this guestd has: one `register` line per command.

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
    let builder = guestd_handlers::qga::register(builder, &config.qga)?;

    let commands = &config.commands;
    let mut builder = builder
        .policy(CommandPolicy {
            enabled: commands.enabled.clone(),
            disabled: commands.disabled.clone(),
        })
        .default_timeout(Duration::from_secs(commands.timeout_secs.max(1)));
    for (name, secs) in &commands.timeouts {
        builder = builder.timeout(name.clone(), Duration::from_secs((*secs).max(1)));
    }
    Ok(builder.build(env))
}
