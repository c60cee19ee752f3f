//! The `users` table.

use serde::{Deserialize, Serialize};
use worker::D1Database;

use super::{opt_text, text, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub name: String,
    pub email_verified: i64,
    pub image: Option<String>,
    pub locale: String,
    pub utm_source: Option<String>,
    pub ip: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub deleted_at: Option<String>,
}

const INSERT: &str = "INSERT INTO users (id, email, name, image, locale, utm_source, ip, created_at, updated_at) \
                      VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)";
const GET_LIVE: &str = "SELECT * FROM users WHERE id = ?1 AND deleted_at IS NULL";

pub async fn insert(db: &D1Database, u: &UserRow) -> Result<(), StoreError> {
    db.prepare(INSERT)
        .bind(&[
            text(&u.id),
            text(&u.email),
            text(&u.name),
            opt_text(u.image.as_deref()),
            text(&u.locale),
            opt_text(u.utm_source.as_deref()),
            opt_text(u.ip.as_deref()),
            text(&u.created_at),
        ])?
        .run()
        .await?;
    Ok(())
}

pub async fn get_live(db: &D1Database, id: &str) -> Result<Option<UserRow>, StoreError> {
    Ok(db.prepare(GET_LIVE).bind(&[text(id)])?.first::<UserRow>(None).await?)
}
