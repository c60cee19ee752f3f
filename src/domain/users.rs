//! Validation of operator input about users.

use super::InvalidRequest;

pub const MAX_NAME_LEN: usize = 200;
const MAX_EMAIL_LEN: usize = 254;

/// A plausible e-mail address: one `@`, a non-empty local part, a dotted domain, no spaces.
pub fn validate_email(email: &str) -> Result<String, InvalidRequest> {
    let email = email.trim();
    let bad = || InvalidRequest::param(format!("`email` is not a valid e-mail address: {email:?}"), "email");
    if email.len() > MAX_EMAIL_LEN || email.chars().any(|c| c.is_whitespace() || is_hidden(c)) {
        return Err(bad());
    }
    let Some((local, domain)) = email.split_once('@') else { return Err(bad()) };
    let domain_ok = !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'));
    if local.is_empty() || !domain_ok {
        return Err(bad());
    }
    Ok(email.to_ascii_lowercase())
}

/// A required, trimmed text of 1..=max characters.
pub fn validate_text(field: &str, value: &str, max: usize) -> Result<String, InvalidRequest> {
    let value = value.trim();
    if value.is_empty() {
        return Err(InvalidRequest::param(format!("`{field}` must not be empty"), field));
    }
    if value.chars().count() > max {
        return Err(InvalidRequest::param(format!("`{field}` must be at most {max} characters"), field));
    }
    if let Some(c) = value.chars().find(|c| is_hidden(*c)) {
        return Err(InvalidRequest::param(
            format!(
                "`{field}` must not contain control or bidirectional formatting characters (found U+{:04X})",
                u32::from(c)
            ),
            field,
        ));
    }
    Ok(value.to_string())
}

/// Characters that change how text displays without showing themselves: control characters
/// (but tab and newline), the bidirectional overrides, embeddings, isolates and marks, and the
/// zero-width space, word joiner, invisible operators and byte-order mark, with which a name can pose
/// as another in a list, a log or a terminal. (The zero-width joiner and non-joiner stay: Persian and
/// Indic names and emoji sequences need them.)
fn is_hidden(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(
            c,
            '\u{200B}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{061C}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// An optional text of at most `max` characters; empty means absent.
pub fn validate_optional_text(field: &str, value: Option<&str>, max: usize) -> Result<Option<String>, InvalidRequest> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => validate_text(field, v, max).map(Some),
    }
}

/// A BCP-47-ish locale tag such as `en`, `zh`, `pt-BR`.
pub fn validate_locale(locale: &str) -> Result<String, InvalidRequest> {
    let ok = (2..=16).contains(&locale.len())
        && locale.split('-').all(|p| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    if ok {
        Ok(locale.to_string())
    } else {
        Err(InvalidRequest::param(format!("`locale` is not a language tag like `en` or `zh-CN`: {locale:?}"), "locale"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_control_bidi_and_zero_width_characters() {
        for bad in [
            "evil\u{202E}gnp.exe",
            "a\u{0007}b",
            "x\u{2066}y",
            "\u{200F}admin",
            "nul\u{0}",
            "Acme\u{200B}",
            "\u{FEFF}x",
            "a\u{2060}b",
        ] {
            assert_eq!(validate_text("name", bad, 100).err().and_then(|e| e.param).as_deref(), Some("name"), "{bad:?}");
        }
        assert!(validate_text("description", "two\nlines\tand a tab, 中文, émoji 🙂", 100).is_ok());
        assert!(
            validate_text("name", "می\u{200C}خواهم 👨\u{200D}👩\u{200D}👧", 100).is_ok(),
            "joiners are letters' business"
        );
    }

    #[test]
    fn emails() {
        assert_eq!(validate_email(" Ann@Example.COM ").expect("valid"), "ann@example.com");
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a b@example.com",
            "a@b@c.com",
            "ann@.com",
            "ann@-x.com",
            "ann\u{202E}@x.com",
        ] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn texts_and_locales() {
        assert_eq!(validate_text("name", "  Ann ", 10).expect("valid"), "Ann");
        assert_eq!(validate_text("name", "", 10).expect_err("empty").param.as_deref(), Some("name"));
        assert!(validate_text("name", "ééééééééééé", 10).is_err());
        assert_eq!(validate_optional_text("d", Some(" "), 5).expect("ok"), None);
        assert!(validate_locale("zh-CN").is_ok());
        assert!(validate_locale("x").is_err());
        assert!(validate_locale("en us").is_err());
    }
}
