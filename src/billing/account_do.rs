//! The account Durable Object (binding `ACCOUNTS`, class `AccountDo`), one
//! per paying account, with SQLite storage. It will serialize every money
//! decision for its account (see docs/architecture.md). Today it answers a
//! liveness probe that `/health?deep=1` uses to prove the namespace works.

use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

#[durable_object]
pub struct AccountDo {
    state: State,
}

impl DurableObject for AccountDo {
    fn new(state: State, _env: Env) -> Self {
        Self { state }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        match req.path().as_str() {
            "/ping" => {
                let sql = self.state.storage().sql();
                sql.exec("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL)", None)?;
                sql.exec("INSERT INTO meta (k, v) VALUES ('pings', 1) ON CONFLICT(k) DO UPDATE SET v = v + 1", None)?;
                #[derive(serde::Deserialize)]
                struct Row {
                    v: i64,
                }
                let row: Row = sql.exec("SELECT v FROM meta WHERE k = 'pings'", None)?.one()?;
                Response::from_json(&serde_json::json!({ "pings": row.v }))
            }
            _ => Response::error("not found", 404),
        }
    }
}
