//! Windows: the password of the built-in Administrator (the local account whose RID is 500,
//! i.e. whose SID ends in `-500`, whatever it was renamed to) or of a named account, set with
//! `NetUserSetInfo` level 1003. The account choice is platform-neutral and tested on Linux;
//! only the `netapi32` glue is behind `cfg(windows)`.
//!
//! [`AccountStore`] says where accounts live: the real local account database (`netapi`, the
//! default and the only choice a real guest should use), or a FAKE directory (`fake:DIR`) for
//! tests under Wine, which has no user database. The fake goes through the same account
//! selection ([`choose_account`]); only the enumeration and the final set are replaced. It
//! exists only in builds with the cargo feature `fake-windows-accounts` (the Wine end-to-end
//! test builds `guestd.exe` so; release builds do not) and in this crate's own unit tests.

#[cfg(any(test, feature = "fake-windows-accounts"))]
use std::path::PathBuf;

use std::sync::Arc;

#[cfg(any(test, feature = "fake-windows-accounts"))]
use guestd_core::Root;
use guestd_core::{BackendError, Effect, NativeAction, NativeStep, Plan, Reach, SecretString};
use zeroize::Zeroizing;

#[cfg(any(test, feature = "fake-windows-accounts"))]
use super::crypt;

/// Where the Windows accounts live (`password.windows_accounts` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccountStore {
    /// The local account database through netapi32 (`NetUserEnum` + `NetUserSetInfo`).
    #[default]
    NetApi,
    /// TESTS ONLY (Wine has no user database). `DIR/accounts` lists the accounts, one
    /// `name:rid` a line; setting a password records its SHA-512-crypt hash (never the
    /// password) in `DIR/passwords/<name>`.
    #[cfg(any(test, feature = "fake-windows-accounts"))]
    Fake(PathBuf),
}

impl AccountStore {
    /// Parse `netapi`, or `fake:DIR` (DIR absolute) in a build with the fake store.
    pub fn from_spec(spec: &str) -> Result<Self, String> {
        match spec.split_once(':') {
            _ if spec == "netapi" => Ok(Self::NetApi),
            #[cfg(any(test, feature = "fake-windows-accounts"))]
            Some(("fake", dir)) if std::path::Path::new(dir).is_absolute() => {
                Ok(Self::Fake(PathBuf::from(dir)))
            }
            #[cfg(any(test, feature = "fake-windows-accounts"))]
            Some(("fake", dir)) => Err(format!(
                "windows_accounts 'fake:{dir}': the directory must be an absolute path"
            )),
            #[cfg(any(test, feature = "fake-windows-accounts"))]
            _ => Err(format!(
                "windows_accounts '{spec}': expected 'netapi' or 'fake:DIR' (tests only)"
            )),
            #[cfg(not(any(test, feature = "fake-windows-accounts")))]
            Some(("fake", _)) => Err(format!(
                "windows_accounts '{spec}': the fake account store is for tests, and this guestd \
                 was built without it (cargo feature fake-windows-accounts); use 'netapi'"
            )),
            #[cfg(not(any(test, feature = "fake-windows-accounts")))]
            _ => Err(format!("windows_accounts '{spec}': expected 'netapi'")),
        }
    }
}

/// The plan that sets the password of `user` (or of the built-in Administrator) in `store`: one
/// native step (`NetUserSetInfo` is an API, not a command), which a `--root` sandbox keeps off
/// the machine like `chpasswd` (the fake store stays in its own directory: it runs). The
/// password is kept in a zeroizing buffer inside the step, never shown.
pub fn plan_set_password(
    store: &AccountStore,
    user: Option<&str>,
    password: &SecretString,
) -> Plan {
    Plan {
        native: vec![NativeStep(Arc::new(SetPassword {
            store: store.clone(),
            user: user.map(str::to_string),
            password: Zeroizing::new(password.expose().to_string()),
        }))],
        ..Plan::default()
    }
}

/// The native step of [`plan_set_password`].
struct SetPassword {
    store: AccountStore,
    user: Option<String>,
    password: Zeroizing<String>,
}

impl NativeAction for SetPassword {
    fn name(&self) -> &str {
        "NetUserSetInfo"
    }

    fn describe(&self) -> String {
        let account = match &self.user {
            Some(user) => format!("of the local account '{user}'"),
            None => format!("of the built-in Administrator (RID {ADMINISTRATOR_RID})"),
        };
        match &self.store {
            AccountStore::NetApi => format!("set the password {account} (level 1003)"),
            #[cfg(any(test, feature = "fake-windows-accounts"))]
            AccountStore::Fake(dir) => format!(
                "set the password {account} in the FAKE account store {}",
                dir.display()
            ),
        }
    }

    fn reach(&self) -> Reach {
        match &self.store {
            AccountStore::NetApi => Reach::Machine(Effect::Accounts),
            #[cfg(any(test, feature = "fake-windows-accounts"))]
            AccountStore::Fake(_) => Reach::Root,
        }
    }

    fn run(&self) -> Result<(), String> {
        let password = SecretString::new(self.password.clone());
        set_password_in(&self.store, self.user.as_deref(), &password).map_err(|e| e.to_string())
    }
}

/// Set the password of `user` (or of the built-in Administrator) in `store`.
pub fn set_password_in(
    store: &AccountStore,
    user: Option<&str>,
    password: &SecretString,
) -> Result<(), BackendError> {
    match store {
        AccountStore::NetApi => netapi_set_password(user, password),
        #[cfg(any(test, feature = "fake-windows-accounts"))]
        AccountStore::Fake(dir) => fake::set_password(dir, user, password),
    }
}

#[cfg(windows)]
fn netapi_set_password(user: Option<&str>, password: &SecretString) -> Result<(), BackendError> {
    glue::set_password(user, password)
}

#[cfg(not(windows))]
fn netapi_set_password(_user: Option<&str>, _password: &SecretString) -> Result<(), BackendError> {
    Err(BackendError::Unsupported(
        "setting a Windows password from a non-Windows build".to_string(),
    ))
}

/// The fake account store (see `AccountStore::Fake`); works on every platform.
#[cfg(any(test, feature = "fake-windows-accounts"))]
pub mod fake {
    use std::path::Path;

    use guestd_core::WriteOptions;
    use tracing::warn;

    use super::*;

    /// The accounts listed in `DIR/accounts` (`name:rid` lines; `#` comments).
    pub fn accounts(store: &Root) -> Result<Vec<LocalAccount>, BackendError> {
        let text = store
            .read_to_string("/accounts")
            .map_err(|e| BackendError::Failed(format!("fake account store: {e}")))?;
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (name, rid) = l.rsplit_once(':').ok_or_else(|| bad_line(l))?;
                Ok(LocalAccount {
                    name: name.to_string(),
                    rid: rid.parse().map_err(|_| bad_line(l))?,
                })
            })
            .collect()
    }

    fn bad_line(line: &str) -> BackendError {
        BackendError::Failed(format!(
            "fake account store: bad line '{line}' (want name:rid)"
        ))
    }

    pub fn set_password(
        dir: &Path,
        user: Option<&str>,
        password: &SecretString,
    ) -> Result<(), BackendError> {
        let store = Root::sandbox(dir).map_err(|e| {
            BackendError::Failed(format!("fake account store {}: {e}", dir.display()))
        })?;
        let list = accounts(&store)?;
        let account = choose_account(&list, user)?;
        let hash = crypt::sha512_crypt(password.expose(), &crypt::fresh_salt()?)?;
        let fail =
            |e: guestd_core::RootError| BackendError::Failed(format!("fake account store: {e}"));
        store.create_dir_all("/passwords", 0o700).map_err(fail)?;
        store
            .write_atomic(
                format!("/passwords/{}", account.name),
                format!("{}\n", hash.as_str()).as_bytes(),
                WriteOptions::mode(0o600),
            )
            .map_err(fail)?;
        warn!(user = %account.name, rid = account.rid, "password recorded in the FAKE account store (tests only)");
        Ok(())
    }
}

/// The relative id of the built-in Administrator account.
pub const ADMINISTRATOR_RID: u32 = 500;

/// A local account as `NetUserEnum` level 20 reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAccount {
    pub name: String,
    /// The last sub-authority of the account's SID.
    pub rid: u32,
}

/// The RID of a SID in string form (`S-1-5-21-…-500` → 500).
pub fn rid_of_sid(sid: &str) -> Option<u32> {
    if !sid.starts_with("S-1-") {
        return None;
    }
    sid.rsplit('-').next()?.parse().ok()
}

/// Which account gets the password: the named one (case-insensitive, as Windows compares
/// account names), or the built-in Administrator when no name is configured.
pub fn choose_account<'a>(
    accounts: &'a [LocalAccount],
    wanted: Option<&str>,
) -> Result<&'a LocalAccount, BackendError> {
    match wanted {
        Some(name) => accounts
            .iter()
            .find(|a| a.name.to_lowercase() == name.to_lowercase())
            .ok_or_else(|| BackendError::Invalid(format!("no local account named '{name}'"))),
        None => accounts
            .iter()
            .find(|a| a.rid == ADMINISTRATOR_RID)
            .ok_or_else(|| {
                BackendError::Failed(
                    "no built-in Administrator account (RID 500) was found".to_string(),
                )
            }),
    }
}

#[cfg(windows)]
pub use glue::local_accounts;

#[cfg(windows)]
#[allow(unsafe_code)]
mod glue {
    use tracing::info;
    use windows_sys::Win32::Foundation::ERROR_MORE_DATA;
    use windows_sys::Win32::NetworkManagement::NetManagement::{
        FILTER_NORMAL_ACCOUNT, MAX_PREFERRED_LENGTH, NERR_Success, NetApiBufferFree, NetUserEnum,
        NetUserSetInfo, USER_INFO_20, USER_INFO_1003,
    };
    use zeroize::Zeroizing;

    use guestd_core::{BackendError, SecretString};

    use super::{LocalAccount, choose_account};

    /// Set the password of `user` (or of the built-in Administrator).
    pub fn set_password(user: Option<&str>, password: &SecretString) -> Result<(), BackendError> {
        let accounts = local_accounts()?;
        let account = choose_account(&accounts, user)?;
        let name = wide(&account.name);
        let mut secret: Zeroizing<Vec<u16>> =
            Zeroizing::new(password.expose().encode_utf16().chain(Some(0)).collect());
        let info = USER_INFO_1003 {
            usri1003_password: secret.as_mut_ptr(),
        };
        let mut parm_err = 0u32;
        // SAFETY: `name` and `secret` are NUL-terminated UTF-16 buffers alive for the call;
        // `info` is a valid USER_INFO_1003 for level 1003; a null server means this machine.
        let rc = unsafe {
            NetUserSetInfo(
                std::ptr::null(),
                name.as_ptr(),
                1003,
                (&info as *const USER_INFO_1003).cast(),
                &mut parm_err,
            )
        };
        if rc != NERR_Success {
            return Err(BackendError::Failed(format!(
                "NetUserSetInfo for '{}' failed with error {rc}",
                account.name
            )));
        }
        info!(user = %account.name, "password set");
        Ok(())
    }

    fn wide(s: &str) -> Vec<u16> {
        s.encode_utf16().chain(Some(0)).collect()
    }

    /// Every normal local account with its RID (`NetUserEnum` level 20).
    pub fn local_accounts() -> Result<Vec<LocalAccount>, BackendError> {
        let mut out = Vec::new();
        let mut resume = 0u32;
        loop {
            let mut buf: *mut u8 = std::ptr::null_mut();
            let (mut read, mut total) = (0u32, 0u32);
            // SAFETY: all out-pointers point to live locals; the API allocates `buf`, which is
            // freed with NetApiBufferFree below.
            let rc = unsafe {
                NetUserEnum(
                    std::ptr::null(),
                    20,
                    FILTER_NORMAL_ACCOUNT,
                    &mut buf,
                    MAX_PREFERRED_LENGTH,
                    &mut read,
                    &mut total,
                    &mut resume,
                )
            };
            if rc != NERR_Success && rc != ERROR_MORE_DATA {
                return Err(BackendError::Failed(format!(
                    "NetUserEnum failed with error {rc}"
                )));
            }
            if !buf.is_null() {
                // SAFETY: on success `buf` holds `read` USER_INFO_20 records.
                let records = unsafe {
                    std::slice::from_raw_parts(buf as *const USER_INFO_20, read as usize)
                };
                for r in records {
                    out.push(LocalAccount {
                        // SAFETY: usri20_name is a NUL-terminated string inside `buf`.
                        name: unsafe { from_wide(r.usri20_name) },
                        rid: r.usri20_user_id,
                    });
                }
                // SAFETY: `buf` was allocated by NetUserEnum and is not used afterwards.
                unsafe { NetApiBufferFree(buf.cast()) };
            }
            if rc != ERROR_MORE_DATA {
                return Ok(out);
            }
        }
    }

    /// # Safety
    /// `p` is null or a valid NUL-terminated UTF-16 string.
    unsafe fn from_wide(p: *const u16) -> String {
        if p.is_null() {
            return String::new();
        }
        let mut len = 0;
        // SAFETY: the caller guarantees a terminating NUL.
        while unsafe { *p.add(len) } != 0 {
            len += 1;
        }
        // SAFETY: `len` u16s before the NUL are readable.
        String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(p, len) })
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests build their trees by path
mod tests {
    use super::*;

    fn accounts() -> Vec<LocalAccount> {
        vec![
            LocalAccount {
                name: "Gast".into(),
                rid: 501,
            },
            LocalAccount {
                name: "Administrateur".into(),
                rid: 500,
            },
            LocalAccount {
                name: "ops".into(),
                rid: 1001,
            },
        ]
    }

    #[test]
    fn builtin_administrator_is_found_whatever_its_name() {
        let list = accounts();
        assert_eq!(choose_account(&list, None).unwrap().name, "Administrateur");
    }

    #[test]
    fn a_named_account_wins_case_insensitively() {
        let list = accounts();
        assert_eq!(choose_account(&list, Some("OPS")).unwrap().rid, 1001);
        assert!(choose_account(&list, Some("root")).is_err());
    }

    #[test]
    fn no_administrator_is_an_error() {
        let list = vec![LocalAccount {
            name: "ops".into(),
            rid: 1001,
        }];
        assert!(choose_account(&list, None).is_err());
    }

    /// Read-only smoke test of the glue: `NetUserEnum` level 20 answers with named accounts.
    /// (Wine lists only the current user, so finding RID 500 is not asserted here.)
    #[cfg(windows)]
    #[test]
    fn enumerates_local_accounts() {
        let accounts = local_accounts().unwrap();
        assert!(!accounts.is_empty());
        assert!(accounts.iter().all(|a| !a.name.is_empty()), "{accounts:?}");
    }

    #[test]
    fn account_store_specs() {
        assert_eq!(AccountStore::from_spec("netapi"), Ok(AccountStore::NetApi));
        let dir = std::env::temp_dir();
        let spec = format!("fake:{}", dir.display());
        assert_eq!(AccountStore::from_spec(&spec), Ok(AccountStore::Fake(dir)));
        assert!(
            AccountStore::from_spec("fake:relative/dir")
                .unwrap_err()
                .contains("absolute")
        );
        assert!(
            AccountStore::from_spec("sam")
                .unwrap_err()
                .contains("'netapi' or 'fake:DIR'")
        );
    }

    #[test]
    fn fake_store_records_a_hash_for_the_chosen_account() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("accounts"), "# x\nGast:501\nAdmin:500\n").unwrap();
        let store = AccountStore::Fake(d.path().to_path_buf());
        let pw = SecretString::new(zeroize::Zeroizing::new("s3cret pw".to_string()));
        set_password_in(&store, None, &pw).unwrap();
        let hash = std::fs::read_to_string(d.path().join("passwords/Admin")).unwrap();
        assert!(crypt::verify(hash.trim(), "s3cret pw"));
        assert!(!hash.contains("s3cret"));
        assert!(!d.path().join("passwords/Gast").exists());
        let err = set_password_in(&store, Some("nobody"), &pw).unwrap_err();
        assert!(
            err.to_string().contains("no local account named 'nobody'"),
            "{err}"
        );
        std::fs::write(d.path().join("accounts"), "broken\n").unwrap();
        let err = set_password_in(&store, None, &pw).unwrap_err();
        assert!(err.to_string().contains("bad line 'broken'"), "{err}");
    }

    #[test]
    fn the_plan_is_one_native_step_that_names_the_account_and_hides_the_password() {
        let pw = SecretString::new(zeroize::Zeroizing::new("s3cret pw".to_string()));
        let plan = plan_set_password(&AccountStore::NetApi, None, &pw);
        assert!(plan.changes.is_empty() && plan.commands.is_empty() && plan.checks.is_empty());
        let [step] = plan.native.as_slice() else {
            panic!("{plan:?}")
        };
        assert_eq!(step.0.name(), "NetUserSetInfo");
        assert_eq!(step.0.reach(), Reach::Machine(Effect::Accounts));
        assert_eq!(
            format!("{step:?}"),
            "Native(NetUserSetInfo: set the password of the built-in Administrator (RID 500) \
             (level 1003))"
        );
        assert!(!format!("{plan:?}").contains("s3cret"));
        let d = tempfile::tempdir().unwrap();
        let plan = plan_set_password(
            &AccountStore::Fake(d.path().to_path_buf()),
            Some("ops"),
            &pw,
        );
        assert_eq!(plan.native[0].0.reach(), Reach::Root);
        assert!(
            plan.native[0]
                .0
                .describe()
                .starts_with("set the password of the local account 'ops' in the FAKE")
        );
    }

    #[test]
    fn rid_from_sid_strings() {
        assert_eq!(
            rid_of_sid("S-1-5-21-3623811015-3361044348-30300820-500"),
            Some(500)
        );
        assert_eq!(
            rid_of_sid("S-1-5-21-3623811015-3361044348-30300820-1013"),
            Some(1013)
        );
        assert_eq!(rid_of_sid("garbage-500"), None);
    }
}
