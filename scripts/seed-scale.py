#!/usr/bin/env python3
"""Seeds a stopped gateway's local state for `npm run bench:scale` (scripts/bench-scale.mjs).

Writes straight into the SQLite files wrangler keeps under --persist-to, in the storage format the
gateway's own code paths write: users and keys, usage records with their ledger copies (a usage row
per record, `tx-{id}`, and one recharge per user equal to what the user spent, so every account's
D1 ledger sums to the balance its object holds), and the roll-ups and running totals the triggers
keep. For speed the triggers and indexes are set aside during the load and rebuilt from the rows
after it, which leaves exactly what the triggers would have left. The probe user (a real account,
made through the API) gets `--probe-records` records, written both to D1 and to its account
object's ledger (marked as copied), so its transactions page reads a long ledger.

Deterministic (a fixed seed). Prints one JSON line of what it wrote.
"""

import argparse
import calendar
import json
import random
import sqlite3
import time

DAY_MS = 86_400_000
MODELS = [
    ("openai/gpt-4o-mini", "openai", 150, 600),
    ("openai/gpt-4o", "openai", 2_500, 10_000),
    ("anthropic/claude-3.5-sonnet", "anthropic", 3_000, 15_000),
    ("anthropic/claude-3-5-haiku-20241022", "anthropic", 800, 4_000),
    ("google/gemini-2.0-flash-001", "google", 100, 400),
    ("meta-llama/llama-3.1-8b-instruct", "openrouter", 20, 50),
]


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def ms_of(text):
    return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")) * 1000 + int(text[20:23])


def set_aside(db, table):
    """Drops a table's triggers and secondary indexes; returns the SQL that makes them again."""
    rows = db.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ? AND type IN ('index', 'trigger') AND sql IS NOT NULL",
        (table,),
    ).fetchall()
    for kind, name, _ in rows:
        db.execute(f"DROP {kind.upper()} {name}")
    return [sql for _, _, sql in rows]


def records_for(rng, user, key, start_ms, end_ms, n, prefix, base=0):
    """n usage records of one user between two times, in time order, with the ledger rows they make
    (starting from a balance of `base`, and ending there)."""
    times = sorted(rng.randrange(start_ms, end_ms) for _ in range(n))
    usage, ledger = [], []
    sum_cost = 0
    costs = []
    for j, at in enumerate(times):
        model, provider, input_price, output_price = MODELS[rng.randrange(len(MODELS))]
        prompt, completion = rng.randrange(10, 4_000), rng.randrange(1, 1_500)
        cost = (prompt * input_price + completion * output_price) // 1_000_000 + 1
        costs.append(cost)
        sum_cost += cost
        rid = f"gen-{prefix}-{j:07d}"
        usage.append((rid, key, user, None, model, provider, prompt, completion, 0, 0, cost, cost * 95 // 100,
                      rng.randrange(200, 4_000), 200, j % 3 == 0, 0, 0, iso(at), None, None, 0))
    # One recharge before the first record, of what the records cost: the account ends where it began.
    balance = base + sum_cost
    ledger.append((f"tx-seed-{prefix}", user, "recharge", sum_cost, balance, f"seed-{prefix}", "seeded credit", None,
                   iso(times[0] - 1), None))
    for row, cost in zip(usage, costs):
        balance -= cost
        ledger.append((f"tx-{row[0]}", user, "usage", -cost, balance, row[0], f"{row[4]}: chat", key, row[17], None))
    return usage, ledger


USAGE_INSERT = (
    "INSERT INTO usage_records (id, key_id, user_id, org_id, model, provider, prompt_tokens, completion_tokens, "
    "reasoning_tokens, cached_tokens, cost_micros, upstream_cost_micros, latency_ms, status, streamed, cancelled, "
    "estimated, created_at, upstream_id, end_user, restored) VALUES (" + ",".join("?" * 21) + ")"
)
LEDGER_INSERT = (
    "INSERT INTO balance_transactions (id, user_id, type, amount, balance_after, reference_id, description, key_id, "
    "created_at, upstream_id) VALUES (" + ",".join("?" * 10) + ")"
)

# The roll-ups and running totals, rebuilt from the rows as the triggers of migrations 0004, 0013 and 0015 keep them.
REBUILD = [
    "DELETE FROM usage_daily",
    "INSERT INTO usage_daily (day, key_id, model, provider, user_id, org_id, requests, prompt_tokens, completion_tokens, cost_micros) "
    "SELECT substr(created_at, 1, 10), key_id, model, provider, MIN(user_id), MIN(org_id), COUNT(*), SUM(prompt_tokens), "
    "SUM(completion_tokens), SUM(cost_micros) FROM usage_records WHERE restored = 0 GROUP BY 1, 2, 3, 4",
    "DELETE FROM usage_daily_global",
    "INSERT INTO usage_daily_global (day, model, provider, requests, prompt_tokens, completion_tokens, cost_micros) "
    "SELECT substr(created_at, 1, 10), model, provider, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_micros) "
    "FROM usage_records WHERE restored = 0 GROUP BY 1, 2, 3",
    "DELETE FROM usage_daily_user",
    "INSERT INTO usage_daily_user (day, user_id, requests, prompt_tokens, completion_tokens, cost_micros) "
    "SELECT substr(created_at, 1, 10), user_id, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_micros) "
    "FROM usage_records WHERE restored = 0 GROUP BY 1, 2",
    "DELETE FROM usage_daily_key",
    "INSERT INTO usage_daily_key (day, key_id, requests, prompt_tokens, completion_tokens, cost_micros) "
    "SELECT substr(created_at, 1, 10), key_id, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_micros) "
    "FROM usage_records WHERE restored = 0 GROUP BY 1, 2",
    "DELETE FROM usage_daily_end_user",
    "INSERT INTO usage_daily_end_user (day, key_id, end_user, user_id, org_id, requests, prompt_tokens, completion_tokens, cost_micros) "
    "SELECT substr(created_at, 1, 10), key_id, end_user, MIN(user_id), MIN(org_id), COUNT(*), SUM(prompt_tokens), "
    "SUM(completion_tokens), SUM(cost_micros) FROM usage_records WHERE end_user IS NOT NULL AND restored = 0 GROUP BY 1, 2, 3",
    "DELETE FROM usage_totals_model",
    "INSERT INTO usage_totals_model (model, requests, charged, upstream_cost, below_cost) "
    "SELECT model, COUNT(*), SUM(cost_micros), COALESCE(SUM(upstream_cost_micros), 0), "
    "SUM(CASE WHEN upstream_cost_micros > cost_micros THEN 1 ELSE 0 END) FROM usage_records "
    "WHERE key_id <> '' AND restored = 0 GROUP BY model",
    "DELETE FROM ledger_totals",
    "INSERT INTO ledger_totals (user_id, amount, archived, closed_without_settlement) "
    "SELECT user_id, SUM(amount), 0, SUM(CASE WHEN type = 'usage' AND description LIKE 'closed without settlement%' THEN 1 ELSE 0 END) "
    "FROM balance_transactions GROUP BY user_id",
]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--d1", required=True, help="the D1 database's SQLite file")
    p.add_argument("--object", required=True, help="the probe account object's SQLite file")
    p.add_argument("--probe-user", required=True)
    p.add_argument("--probe-key", required=True)
    p.add_argument("--users", type=int, default=50_000)
    p.add_argument("--records", type=int, default=5_000_000)
    p.add_argument("--probe-records", type=int, default=100_000)
    p.add_argument("--days", type=int, default=400)
    p.add_argument("--now-ms", type=int, required=True)
    a = p.parse_args()
    rng = random.Random(19)
    began = time.time()
    start_ms = a.now_ms - a.days * DAY_MS

    db = sqlite3.connect(a.d1, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -2000000")
    db.execute("BEGIN")
    remake = set_aside(db, "usage_records") + set_aside(db, "balance_transactions")

    # Users and their keys (a key each; hashes that match no secret).
    db.executemany(
        "INSERT INTO users (id, email, name, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
        ((f"u-scale-{i:06d}", f"scale-{i}@example.com", f"Scale user {i}", iso(start_ms), iso(start_ms)) for i in range(a.users)),
    )
    db.executemany(
        "INSERT INTO api_keys (id, user_id, name, key_hash, key_prefix, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        ((f"k-scale-{i:06d}", f"u-scale-{i:06d}", "seeded", f"{i:064x}", "tg-seeded", iso(start_ms), iso(start_ms))
         for i in range(a.users)),
    )

    # Records per user: spread unevenly (exponential), at least one each, to the total asked for.
    left = a.records - a.probe_records
    mean = left / a.users
    counts = [max(1, int(rng.expovariate(1 / mean))) for _ in range(a.users)]
    scale = left / sum(counts)
    counts = [max(1, round(c * scale)) for c in counts]
    written = 0
    for i, n in enumerate(counts):
        usage, ledger = records_for(rng, f"u-scale-{i:06d}", f"k-scale-{i:06d}", start_ms, a.now_ms, n, f"s{i:06d}")
        db.executemany(USAGE_INSERT, usage)
        db.executemany(LEDGER_INSERT, ledger)
        written += n
    # The probe's rows go after its real ones in its object's ledger, whose last row holds the balance.
    obj = sqlite3.connect(a.object, isolation_level=None)
    (base,) = obj.execute("SELECT balance_after FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
    probe_usage, probe_ledger = records_for(rng, a.probe_user, a.probe_key, start_ms, a.now_ms - DAY_MS,
                                            a.probe_records, "probe", int(base))
    db.executemany(USAGE_INSERT, probe_usage)
    db.executemany(LEDGER_INSERT, probe_ledger)
    written += len(probe_usage)
    loaded = time.time()
    for sql in REBUILD:
        db.execute(sql)
    for sql in remake:
        db.execute(sql)
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()

    # The probe account's own ledger, with the same rows (already copied to D1), after its real ones.
    obj.execute("BEGIN")
    obj.executemany(
        "INSERT INTO ledger (id, type, amount, balance_after, reference_id, description, key_id, created_ms, synced) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
        ((row[0], row[2], row[3], row[4], row[5], row[6], row[7],
          ms_of(row[8])) for row in probe_ledger),
    )
    obj.execute("COMMIT")
    obj.close()
    print(json.dumps({"users": a.users, "records": written, "ledger_rows": written + a.users + 1,
                      "load_s": round(loaded - began, 1), "total_s": round(time.time() - began, 1)}))


if __name__ == "__main__":
    main()
