//! Identifiers. Randomness comes from the caller.

/// A random (version 4) UUID in its hyphenated lowercase form.
pub fn uuid_v4(random: [u8; 16]) -> String {
    uuid::Builder::from_random_bytes(random).into_uuid().hyphenated().to_string()
}

/// A generation (request) id in OpenRouter's style: `gen-` + 24 hex characters.
pub fn generation_id(random: [u8; 12]) -> String {
    format!("gen-{}", hex::encode(random))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_version_4() {
        let id = uuid_v4([7; 16]);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_eq!(generation_id([0; 12]), "gen-000000000000000000000000");
    }
}
