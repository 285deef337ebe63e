//! Which commands this guestd has: one `register` line per command.

use std::sync::Arc;
use std::time::Duration;

use guestd_core::{CommandPolicy, DispatchError, Dispatcher, DispatcherBuilder, Env};
use guestd_handlers::{
    AgentUpdateHandler, ConfigureHandler, FeaturesHandler, FileInjectHandler, InjectConfig,
    InjectFileHandler, KmsActivateHandler, ResetNetworkHandler, VersionHandler,
};

use crate::config::Config;

/// Build the dispatcher with every command, the command policy and the timeouts.
pub fn build_dispatcher(config: &Config, env: Env) -> Result<Dispatcher, DispatchError> {
    let builder = DispatcherBuilder::new()
        .register(VersionHandler)?
        .register(FeaturesHandler)?;
    let builder = guestd_handlers::register_password_commands(builder, config.password.clone())?
        .register(ResetNetworkHandler::new(config.network.clone()))?
        .register(InjectFileHandler::new(inject_config(config)))?
        .register(FileInjectHandler::new(inject_config(config)))?
        .register(AgentUpdateHandler::new(config.update.clone()))?
        .register(KmsActivateHandler)?
        .register(ConfigureHandler::new(config.configure.clone()))?;
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
    // Like qga's guest-exec: off until the configuration enables at least one resource kind.
    if config.configure.kinds.is_empty() {
        disabled.push("configure".into());
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

/// `[inject]`, with `configure`'s scripts directory denied: what `run` executes must stay
/// what the guest's administrator put there, so the host cannot inject a script.
fn inject_config(config: &Config) -> InjectConfig {
    let mut inject = config.inject.clone();
    let scripts = &config.configure.scripts_dir;
    if !inject.deny.contains(scripts) {
        inject.deny.push(scripts.clone());
    }
    inject
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configure_is_off_until_a_kind_is_enabled_and_its_scripts_cannot_be_injected() {
        let env = Env {
            root: guestd_core::Root::system(),
            runner: Arc::new(guestd_core::SystemRunner),
            backend: Arc::new(guestd_core::NullBackend),
        };
        let mut config = Config::default();
        let off = build_dispatcher(&config, env.clone()).unwrap();
        let native = off.enabled_commands(guestd_core::Dialect::Native);
        assert!(!native.contains(&"configure"), "{native:?}");
        config.configure.kinds = [guestd_core::configure::ResourceKind::File]
            .into_iter()
            .collect();
        let on = build_dispatcher(&config, env).unwrap();
        assert!(
            on.enabled_commands(guestd_core::Dialect::Native)
                .contains(&"configure")
        );
        let inject = inject_config(&config);
        assert!(inject.deny.contains(&"/etc/guestd/scripts".to_string()));
        let policy = guestd_core::PathPolicy::new(inject.allow, inject.deny);
        assert!(!policy.permits("/etc/guestd/scripts/evil.sh"));
    }
}
