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
    insert_statement(db, u)?.run().await?;
    Ok(())
}

/// The insert as a statement, for a batch with others (all or nothing).
pub fn insert_statement(db: &D1Database, u: &UserRow) -> worker::Result<worker::D1PreparedStatement> {
    db.prepare(INSERT).bind(&[
        text(&u.id),
        text(&u.email),
        text(&u.name),
        opt_text(u.image.as_deref()),
        text(&u.locale),
        opt_text(u.utm_source.as_deref()),
        opt_text(u.ip.as_deref()),
        text(&u.created_at),
    ])
}

pub async fn get_live(db: &D1Database, id: &str) -> Result<Option<UserRow>, StoreError> {
    Ok(db.prepare(GET_LIVE).bind(&[text(id)])?.first::<UserRow>(None).await?)
}

const UPDATE: &str =
    "UPDATE users SET email = ?2, name = ?3, image = ?4, locale = ?5, utm_source = ?6, email_verified = ?7, \
                      updated_at = ?8 WHERE id = ?1 AND deleted_at IS NULL";
const SOFT_DELETE: &str = "UPDATE users SET deleted_at = ?2, updated_at = ?2 WHERE id = ?1 AND deleted_at IS NULL";

#[derive(Deserialize)]
struct Count {
    n: i64,
}

/// Live users, newest first; `search` matches e-mail or name.
pub async fn list(
    db: &D1Database,
    search: Option<&str>,
    limit: u32,
    offset: i64,
) -> Result<(Vec<UserRow>, i64), StoreError> {
    let (filter, mut args) = match search {
        Some(s) => (
            format!("deleted_at IS NULL AND ({} OR {})", super::contains("email", 1), super::contains("name", 1)),
            vec![super::text(s)],
        ),
        None => ("deleted_at IS NULL".to_string(), vec![]),
    };
    let total = db
        .prepare(format!("SELECT COUNT(*) AS n FROM users WHERE {filter}"))
        .bind(&args)?
        .first::<Count>(None)
        .await?
        .map_or(0, |c| c.n);
    args.push(super::int(i64::from(limit)));
    args.push(super::int(offset));
    let n = args.len();
    let rows = db
        .prepare(format!(
            "SELECT * FROM users WHERE {filter} ORDER BY created_at DESC, id LIMIT ?{} OFFSET ?{n}",
            n - 1
        ))
        .bind(&args)?
        .all()
        .await?
        .results::<UserRow>()?;
    Ok((rows, total))
}

pub async fn update(db: &D1Database, u: &UserRow) -> Result<(), StoreError> {
    db.prepare(UPDATE)
        .bind(&[
            text(&u.id),
            text(&u.email),
            text(&u.name),
            opt_text(u.image.as_deref()),
            text(&u.locale),
            opt_text(u.utm_source.as_deref()),
            super::int(u.email_verified),
            text(&u.updated_at),
        ])?
        .run()
        .await?;
    Ok(())
}

/// `false` when there was no live user.
pub async fn soft_delete(db: &D1Database, id: &str, now_iso: &str) -> Result<bool, StoreError> {
    let result = db.prepare(SOFT_DELETE).bind(&[text(id), text(now_iso)])?.run().await?;
    Ok(result.meta()?.and_then(|m| m.changes).unwrap_or(0) > 0)
}

/// Whether a live user already has this email address.
pub async fn email_taken(db: &D1Database, email: &str) -> Result<bool, StoreError> {
    let row = db
        .prepare("SELECT id FROM users WHERE email = ?1 AND deleted_at IS NULL")
        .bind(&[text(email)])?
        .first::<serde_json::Value>(None)
        .await?;
    Ok(row.is_some())
}
