//! How text is written into each configuration format: the one place that decides, per format,
//! whether a string goes in as it is, escaped, or not at all.
//!
//! What reaches a renderer (see [`super::check`] and `model`): addresses, prefixes, gateways,
//! routes, DNS servers and MACs are typed and print as hex digits, digits, `.`, `:` and `/`;
//! the hostname is RFC 1123; device names are checked against what each platform allows. The
//! only free text is the network label, and every format gets it through [`informational`].
//!
//! **Labels are written reduced, not escaped.** The label only informs a reader (an ifupdown
//! `# label:` comment, networkd's `Description=`, wicked's `NAME=`). A comment has no escape at
//! all, and each of the other formats has its own dangerous characters (a trailing `\` continues
//! a systemd line, wicked's parser knows no escape inside quotes, `%` is a systemd specifier).
//! So the label keeps its letters, digits, spaces and `-_.,:()@+/`, and every other character
//! becomes `_`: inert in every format by construction, readable for the usual names, and the
//! exact label stays in the host's data and guestd's log. Control characters never get this far:
//! the model refuses them (`model::check_label`).
//!
//! The quoting functions below are still complete for any printable text (the tests feed them
//! quotes, `$(…)`, backquotes, backslashes and non-ASCII and read the result back with the real
//! parser), and each refuses a control character itself, naming the field, so none can reach a
//! file through them.

use super::super::model::{NetworkError, check_text, invalid};

/// The label as written into any file: letters, digits, spaces and `-_.,:()@+/` kept, anything
/// else `_`.
pub fn informational(label: &str) -> String {
    label
        .trim()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || " -_.,:()@+/".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Characters a POSIX shell treats literally inside double quotes (and that need no quoting at
/// all, apart from space and newline).
fn shell_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.:/%@+,= \n".contains(c)
}

/// A value for a file that `sh` sources (ifcfg, netifrc's `conf.d/net`, `rc.conf`): plain text in
/// double quotes, as those files are usually written; anything else in single quotes, with each
/// `'` written `'\''` (close the quotes, an escaped quote, reopen): inside single quotes the shell
/// interprets nothing. A control character is refused.
pub fn sh_quote(field: &str, value: &str) -> Result<String, NetworkError> {
    check_text(field, value)?;
    Ok(quote_for_sh(value))
}

/// Like [`sh_quote`], but a plain value without spaces is written bare (`DEVICE=eth0`, as
/// ifcfg files are usually written).
pub fn sh_value(field: &str, value: &str) -> Result<String, NetworkError> {
    check_text(field, value)?;
    if !value.is_empty()
        && value
            .chars()
            .all(|c| shell_plain(c) && c != ' ' && c != '\n')
    {
        return Ok(value.to_string());
    }
    Ok(quote_for_sh(value))
}

/// Several values for one `sh` variable, one per line (netifrc's lists).
pub fn sh_lines(field: &str, values: &[String]) -> Result<String, NetworkError> {
    for v in values {
        check_text(field, v)?;
    }
    Ok(quote_for_sh(&values.join("\n")))
}

fn quote_for_sh(value: &str) -> String {
    if value.chars().all(shell_plain) {
        format!("\"{value}\"")
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

/// The part of a shell variable name that stands for a device (`ifconfig_<if>` in `rc.conf`,
/// `config_<if>` in netifrc): what is not a letter, digit or `_` becomes `_`, as FreeBSD's rc
/// and netifrc themselves spell it (`em0.100` → `em0_100`).
pub fn sh_var(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// A wicked `ifcfg` value: single quotes. wicked's own parser reads to the next `'` and knows no
/// escape, so a value with a `'` cannot be written and is refused (the file is also sourced by
/// `sh`, for which the same spelling is right).
pub fn wicked_quote(field: &str, value: &str) -> Result<String, NetworkError> {
    check_text(field, value)?;
    if value.contains('\'') {
        return Err(invalid(format!(
            "{field} contains a single quote, which a wicked ifcfg value cannot hold"
        )));
    }
    Ok(format!("'{value}'"))
}

/// A YAML scalar (netplan): always double-quoted, `\` and `"` escaped, so no value can be read as
/// a number, boolean, null, list or anchor, or end the scalar early.
pub fn yaml_quote(field: &str, value: &str) -> Result<String, NetworkError> {
    check_text(field, value)?;
    Ok(format!(
        "\"{}\"",
        value.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// A GKeyFile value (NetworkManager keyfiles): `\` written `\\`, a leading or trailing space
/// `\s` (GKeyFile would strip it).
pub fn keyfile_value(field: &str, value: &str) -> Result<String, NetworkError> {
    check_text(field, value)?;
    let escaped = value.replace('\\', "\\\\");
    let lead = escaped.len() - escaped.trim_start_matches(' ').len();
    let trail = escaped.len() - escaped.trim_end_matches(' ').len();
    if lead == escaped.len() {
        return Ok("\\s".repeat(lead));
    }
    Ok(format!(
        "{}{}{}",
        "\\s".repeat(lead),
        &escaped[lead..escaped.len() - trail],
        "\\s".repeat(trail)
    ))
}

/// The characters PowerShell accepts as a single quote (it also takes the typographic ones).
const PS_SINGLE_QUOTES: [char; 5] = ['\'', '\u{2018}', '\u{2019}', '\u{201A}', '\u{201B}'];

/// A PowerShell single-quoted string: nothing is expanded inside, and each quote character (any
/// of the five PowerShell accepts) is doubled.
pub fn ps_quote(field: &str, value: &str) -> Result<String, NetworkError> {
    check_text(field, value)?;
    let mut out = String::from("'");
    for c in value.chars() {
        out.push(c);
        if PS_SINGLE_QUOTES.contains(&c) {
            out.push(c);
        }
    }
    out.push('\'');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_keep_what_is_inert_everywhere() {
        assert_eq!(informational("public"), "public");
        assert_eq!(
            informational("prod (eu-west) #2 $(id) `x` 'a' \"b\" \\"),
            "prod (eu-west) _2 _(id) _x_ _a_ _b_ _"
        );
        assert_eq!(informational("réseau-privé"), "réseau-privé");
        assert_eq!(informational("a%b;c"), "a_b_c");
    }

    #[test]
    fn shell_quoting_picks_the_plain_form_when_it_can() {
        assert_eq!(sh_quote("f", "eth0").unwrap(), "\"eth0\"");
        assert_eq!(
            sh_quote("f", "inet 10.0.0.5/24").unwrap(),
            "\"inet 10.0.0.5/24\""
        );
        assert_eq!(sh_quote("f", "it's $x").unwrap(), "'it'\\''s $x'");
        assert_eq!(
            sh_quote("f", "a\nb").unwrap_err().to_string(),
            "f contains a control character (U+000A)"
        );
        assert_eq!(
            sh_lines("f", &["a".into(), "b".into()]).unwrap(),
            "\"a\nb\""
        );
        assert_eq!(sh_var("em0.100-x"), "em0_100_x");
        assert_eq!(sh_value("f", "eth0").unwrap(), "eth0");
        assert_eq!(sh_value("f", "").unwrap(), "\"\"");
        assert_eq!(sh_value("f", "a b").unwrap(), "\"a b\"");
        assert_eq!(sh_value("f", "a;b").unwrap(), "'a;b'");
    }

    #[test]
    fn keyfile_spaces_and_backslashes() {
        assert_eq!(keyfile_value("f", "eth0").unwrap(), "eth0");
        assert_eq!(keyfile_value("f", " a\\b ").unwrap(), "\\sa\\\\b\\s");
        assert_eq!(keyfile_value("f", "  ").unwrap(), "\\s\\s");
    }

    #[test]
    fn powershell_doubles_every_quote_kind() {
        assert_eq!(ps_quote("f", "Ethernet 2").unwrap(), "'Ethernet 2'");
        assert_eq!(
            ps_quote("f", "a'b\u{2019}c").unwrap(),
            "'a''b\u{2019}\u{2019}c'"
        );
        assert!(ps_quote("f", "a\rb").is_err());
    }

    #[test]
    fn wicked_refuses_what_it_cannot_hold() {
        assert_eq!(wicked_quote("f", "a b$c\\").unwrap(), "'a b$c\\'");
        assert!(wicked_quote("f", "a'b").is_err());
    }
}
