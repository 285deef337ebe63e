//! Stopping the guest (`guest-shutdown`): the command of each OS family's own tool, as a plan
//! that `guestd_core::apply` carries out. The tool stops the services cleanly and returns at
//! once; the words are qemu-ga's (`shutdown -P +0 "hypervisor initiated shutdown"` on Linux,
//! BSD's `-p`/`-h` on FreeBSD).

use std::time::Duration;

use guestd_core::{Effect, Plan, PowerOff, ProcessSpec};

use crate::OsFamily;

/// What shutdown(8) and shutdown.exe log and show to logged-in users.
pub const MESSAGE: &str = "hypervisor initiated shutdown";
const TIMEOUT: Duration = Duration::from_secs(30);

/// The plan that stops a guest of `family` as `mode` says.
pub fn plan_shutdown(family: OsFamily, mode: PowerOff) -> Plan {
    let command = match family {
        OsFamily::Windows => {
            // Windows has no halt without power-off: `halt` powers off too.
            let flag = match mode {
                PowerOff::PowerDown | PowerOff::Halt => "/s",
                PowerOff::Reboot => "/r",
            };
            ProcessSpec::new("shutdown.exe").args([flag, "/t", "0", "/c", MESSAGE])
        }
        OsFamily::FreeBsd => {
            let flag = match mode {
                PowerOff::PowerDown => "-p",
                PowerOff::Halt => "-h",
                PowerOff::Reboot => "-r",
            };
            ProcessSpec::new("shutdown").args([flag, "+0", MESSAGE])
        }
        _ => {
            let flag = match mode {
                PowerOff::PowerDown => "-P",
                PowerOff::Halt => "-H",
                PowerOff::Reboot => "-r",
            };
            ProcessSpec::new("shutdown").args([flag, "+0", MESSAGE])
        }
    };
    Plan {
        commands: vec![command.effect(Effect::Power).timeout(TIMEOUT).into()],
        ..Plan::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guestd_core::Reach;
    use guestd_core::plan::Expect;

    fn lines(family: OsFamily, mode: PowerOff) -> Vec<String> {
        let plan = plan_shutdown(family, mode);
        assert!(plan.changes.is_empty() && plan.rollback_commands.is_empty());
        for c in &plan.commands {
            assert_eq!(c.expect, Expect::Success);
            assert_eq!(
                c.command.reach,
                Reach::Machine(Effect::Power),
                "{:?}",
                c.command
            );
            assert_eq!(c.command.timeout, TIMEOUT);
        }
        plan.commands
            .iter()
            .map(|c| c.command.command_line())
            .collect()
    }

    #[test]
    fn each_family_and_mode_plans_its_own_tool() {
        use PowerOff::*;
        let m = MESSAGE;
        for family in [OsFamily::Debian, OsFamily::RedHat, OsFamily::Unknown] {
            assert_eq!(lines(family, PowerDown), [format!("shutdown -P +0 {m}")]);
            assert_eq!(lines(family, Halt), [format!("shutdown -H +0 {m}")]);
            assert_eq!(lines(family, Reboot), [format!("shutdown -r +0 {m}")]);
        }
        assert_eq!(
            lines(OsFamily::FreeBsd, PowerDown),
            [format!("shutdown -p +0 {m}")]
        );
        assert_eq!(
            lines(OsFamily::FreeBsd, Halt),
            [format!("shutdown -h +0 {m}")]
        );
        assert_eq!(
            lines(OsFamily::FreeBsd, Reboot),
            [format!("shutdown -r +0 {m}")]
        );
        assert_eq!(
            lines(OsFamily::Windows, PowerDown),
            [format!("shutdown.exe /s /t 0 /c {m}")]
        );
        assert_eq!(
            lines(OsFamily::Windows, Halt),
            [format!("shutdown.exe /s /t 0 /c {m}")]
        );
        assert_eq!(
            lines(OsFamily::Windows, Reboot),
            [format!("shutdown.exe /r /t 0 /c {m}")]
        );
    }
}
