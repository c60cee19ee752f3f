//! Failed authentications per client (an unknown key costs lookups): counted in isolate
//! memory, or by Cloudflare's Rate Limiting binding (`AUTH_FAILURES`) where the tenant has it.
//! A client over the limit is answered 429 for a minute without any lookup past memory.

use std::cell::RefCell;
use std::collections::HashMap;

/// How long a client over the limit is refused, and the window failures are counted in.
pub const WINDOW_MS: i64 = 60_000;
const MAX_CLIENTS: usize = 10_000;

/// (window start, failures in it, refused until).
type Tally = (i64, u32, i64);

thread_local! {
    static TALLY: RefCell<HashMap<String, Tally>> = RefCell::new(HashMap::new());
}

/// When a refused client may try again (ms), if it is refused now.
pub fn blocked_until(client: &str, now: i64) -> Option<i64> {
    TALLY.with(|t| t.borrow().get(client).map(|(_, _, until)| *until).filter(|until| *until > now))
}

/// Refuses the client for a window (the binding said it is over its limit).
pub fn block(client: &str, now: i64) {
    TALLY.with(|t| {
        let mut t = t.borrow_mut();
        make_room(&mut t, now);
        t.entry(client.to_string()).or_insert((now, 0, 0)).2 = now + WINDOW_MS;
    });
}

/// Counts a failure in this isolate; refuses the client once it passes `limit` in a window.
pub fn count(client: &str, now: i64, limit: u32) {
    TALLY.with(|t| {
        let mut t = t.borrow_mut();
        make_room(&mut t, now);
        let tally = t.entry(client.to_string()).or_insert((now, 0, 0));
        if now - tally.0 >= WINDOW_MS {
            *tally = (now, 0, tally.2);
        }
        tally.1 += 1;
        if tally.1 > limit {
            tally.2 = now + WINDOW_MS;
        }
    });
}

/// Forgets finished windows first; should the map still be full, forgets the clients with the
/// fewest failures that are not refused (a refusal is never dropped to make room).
fn make_room(t: &mut HashMap<String, Tally>, now: i64) {
    if t.len() < MAX_CLIENTS {
        return;
    }
    t.retain(|_, (start, _, until)| now - *start < WINDOW_MS || *until > now);
    if t.len() >= MAX_CLIENTS {
        let mut counts: Vec<u32> = t.values().filter(|(_, _, until)| *until <= now).map(|(_, n, _)| *n).collect();
        if counts.is_empty() {
            return;
        }
        let cut = counts.len() / 2;
        counts.select_nth_unstable(cut);
        let fewest = counts[cut];
        t.retain(|_, (_, n, until)| *until > now || *n > fewest);
    }
}
