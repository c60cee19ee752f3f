//! Metering one inference request: price it, reserve its worst case in the
//! account's object (and the organization's), keep the reservation alive while
//! the request runs, and settle it to the actual cost afterwards. The charge is
//! computed here and nowhere else (`Meter::charge`).

use std::cell::Cell;
use std::rc::Rc;

use futures_channel::oneshot;
use futures_util::future::{select, Either};
use worker::Env;

use super::error::ApiError;
use super::respond::Call;
use crate::billing::batch::{self, Confirmed};
use crate::billing::client::{Account, Beat, Org, OrgRefusal, Reserved, SETTLE_TRY_MS};
use crate::billing::leases;
use crate::billing::protocol::{OnLease, Settlement};
use crate::cache::keys::KeyRecord;
use crate::cache::prices as price_cache;
use crate::domain::account::{About, Ask};
use crate::domain::chat::{ChatRequest, Usage, MAX_OUTPUT_TOKENS};
use crate::domain::keys::KeyRefusal;
use crate::domain::ledger::{self, InFlightCaps, LimitSource, Reservation};
use crate::domain::money::{micros_to_usd, nearest_micros};
use crate::domain::orgs::OrgLimitHit;
use crate::domain::pricing::{self, Price, Tokens};
use crate::domain::rates::{RateHit, RateRefusal};
use crate::domain::usage::UsageRecord;
use crate::domain::windows::Reset;
use crate::env;
use crate::store::prices::PriceRow;

/// How many milliseconds a request waits for the lease another request is asking for.
const LEASE_WAIT_POLLS: u32 = 50;

/// Output tokens assumed when neither the client nor the price table bounds them.
const DEFAULT_MAX_OUTPUT: u64 = 16_384;

/// An open reservation. Settle it exactly once (a repeat charges nothing).
pub struct Meter {
    pub account_id: String,
    pub key_id: String,
    pub request_id: String,
    pub price: Price,
    pub reserved: i64,
    /// The prompt's JSON size (an upper bound on its tokens; estimates use a quarter).
    pub prompt_bytes: u64,
    pub model: String,
    /// The key's organization (its usage record names it, refused or not).
    pub org_id: Option<String>,
    /// The organization's object holds this request (or may: its answer was lost), so it is told the outcome.
    pub org_holds: bool,
    pub started_ms: f64,
    /// Who serves the request (for its usage record).
    pub provider: &'static str,
    /// How long the reservation lives without a heartbeat.
    pub lease_ms: i64,
    /// The id the upstream gave its answer (its generation id), once known.
    pub upstream_id: Option<String>,
    /// The budget lease the request was started on, instead of a reservation of its own.
    pub lease: Option<OnLease>,
    /// Whom the request was made for.
    pub end_user: Option<String>,
    /// Tests only (`FAULT_ABANDON_SETTLE`): its settlement is left in line, as by a task that ended.
    pub abandon_settle: bool,
}

/// What a request may use at most: its prompt (an upper bound) and its output tokens.
pub struct Demand<'a> {
    pub model: &'a str,
    pub prompt: u64,
    pub output: u64,
}

/// How a metered request ended.
pub struct Outcome {
    /// The usage the upstream reported.
    pub usage: Option<Usage>,
    /// Content bytes delivered, for an estimate when no usage was reported;
    /// `None`: the request failed before any answer (charged nothing).
    pub delivered_bytes: Option<u64>,
    /// The status the client got (a stream that broke counts as 502).
    pub status: u16,
    pub streamed: bool,
    /// The client hung up before the end.
    pub cancelled: bool,
    /// Without `usage`: what a direct provider reported before its stream was cut (the prompt exact).
    pub usage_so_far: Option<Usage>,
    /// No answer came by the deadline, though the upstream had the request (`Outcome::unanswered`).
    pub unanswered: bool,
    /// `usage` is OpenRouter's record of the generation, not a report in the answer: the record counts no
    /// cache writes (its tokens would price them as plain input), so what it says OpenRouter billed
    /// (`usage.cost`) is the least charged.
    pub from_record: bool,
}

impl Outcome {
    /// The request failed before any answer.
    pub fn failed(status: u16) -> Self {
        Self {
            usage: None,
            delivered_bytes: None,
            status,
            streamed: false,
            cancelled: false,
            usage_so_far: None,
            unanswered: false,
            from_record: false,
        }
    }

    /// The upstream had the request but did not answer in time: it may have generated, and billed, an
    /// answer that never came. Charged the prompt, estimated, as a reservation closed while its request
    /// waited is (its output is unknown).
    pub fn unanswered(status: u16) -> Self {
        Self { delivered_bytes: Some(0), unanswered: true, ..Self::failed(status) }
    }
}

/// What a request costs and is charged, and for which tokens.
pub struct Charged {
    /// Price × tokens, rounded up once (may exceed the reservation).
    pub cost: i64,
    /// What the account pays: the cost, never above the reservation.
    pub amount: i64,
    pub tokens: Tokens,
    pub estimated: bool,
}

impl Charged {
    pub fn usd(&self) -> f64 {
        micros_to_usd(self.amount)
    }
}

/// Every price row (and route pin), from the nearest cache.
pub async fn price_table(call: &Call) -> Result<price_cache::PriceTable, ApiError> {
    let kv = env::cache(&call.env).map_err(ApiError::internal)?;
    let db = env::db(&call.env).map_err(ApiError::internal)?;
    Ok(price_cache::table(&kv, &db, call.now_ms()).await?)
}

/// The charge rule, for every path (JSON and SSE, any provider, cut and cancelled
/// streams): the reported usage at `price`, else an estimate from the content
/// delivered, else nothing (the request failed before any answer); capped at `reserved`.
pub fn charge(
    price: &Price,
    reserved: i64,
    prompt_bytes: u64,
    usage: Option<&Usage>,
    delivered: Option<u64>,
) -> Charged {
    let (tokens, estimated) = match (usage, delivered) {
        (Some(usage), _) => (usage.tokens(), false),
        (None, Some(bytes)) => (estimate(prompt_bytes, bytes), true),
        (None, None) => return Charged { cost: 0, amount: 0, tokens: Tokens::default(), estimated: false },
    };
    let cost = pricing::cost(price, &tokens);
    Charged { cost, amount: ledger::charge(cost, reserved), tokens, estimated }
}

fn estimate(prompt_bytes: u64, content_bytes: u64) -> Tokens {
    Tokens {
        prompt: ledger::estimate_tokens(prompt_bytes),
        completion: ledger::estimate_tokens(content_bytes),
        ..Tokens::default()
    }
}

impl Meter {
    /// Checks the key and reserves the worst case; bounds the output sent upstream by what was reserved.
    /// Reserves a chat request's worst case; bounds the output sent upstream by what was reserved.
    pub async fn reserve(
        call: &Call,
        key: &KeyRecord,
        hash: &str,
        chat: &mut ChatRequest,
        row: &PriceRow,
    ) -> Result<Self, ApiError> {
        // The output bound: the client's (the smaller field when it set both), else the model's own
        // limits (it cannot write more than its output limit, nor more than its context), else a default.
        let model_limit = row.output_limit().or(row.context_limit());
        let output = chat.max_tokens.or(model_limit).unwrap_or(DEFAULT_MAX_OUTPUT).min(MAX_OUTPUT_TOKENS);
        // The context length is the price table's, as trusted as its prices.
        let prompt = chat.prompt_token_bound_within(row.context_limit(), row.route_native_model.as_deref());
        let demand = Demand { model: &chat.model, prompt, output };
        let (meter, output) = Self::reserve_tokens(call, key, hash, row, demand).await?;
        // Only what was reserved is asked for. The model's own limits are not sent: with a long prompt
        // the output limit may not fit the context beside it (the upstream would refuse the request),
        // and a fallback model has limits of its own. Should a provider write past them (OpenRouter's
        // output limit is its top provider's), the reservation is charged and the rest is uncollected.
        if chat.max_tokens.is_some() || model_limit.is_none_or(|limit| output < limit) {
            chat.cap_output(output);
        }
        Ok(meter)
    }

    /// Checks the key and reserves the worst case of `demand` in the account (and the key's
    /// organization); returns the meter and the output tokens the reservation covers (less than
    /// asked when only part was affordable).
    pub async fn reserve_tokens(
        call: &Call,
        key: &KeyRecord,
        hash: &str,
        row: &PriceRow,
        demand: Demand<'_>,
    ) -> Result<(Self, u64), ApiError> {
        let Demand { model, prompt, output } = demand;
        let price = row.price();
        let worst_rates = price.worst_rates();
        let worst_case = pricing::cost(&worst_rates, &Tokens { prompt, completion: output, ..Tokens::default() });
        let min_to_run =
            pricing::cost(&worst_rates, &Tokens { prompt, completion: output.min(1), ..Tokens::default() });
        let lease_ms = call.config.reservation_lease_ms();
        // A lease only where nothing counts requests in flight or holds them in an organization:
        // neither the account's caps nor the organization's object can see requests started on one.
        // Nor where the object counts each request per minute.
        let rates = key.rates.or(call.config.rate_default);
        let leasing = call.config.leases
            && key.org_id.is_none()
            && call.config.in_flight == InFlightCaps::default()
            && rates.is_none()
            && key.end_user_budget.is_none();
        let meter = |reserved, lease| Self {
            account_id: key.user_id.clone(),
            key_id: key.id.clone(),
            request_id: call.request_id.clone(),
            price,
            reserved,
            prompt_bytes: prompt,
            model: model.to_string(),
            org_id: key.org_id.clone(),
            org_holds: false,
            started_ms: call.started_ms,
            provider: "openrouter",
            lease_ms,
            upstream_id: None,
            lease,
            end_user: call.end_user.clone(),
            abandon_settle: call.config.faults.abandon_settle.as_deref() == Some(model),
        };
        let about = || About {
            model: model.to_string(),
            org_id: key.org_id.clone(),
            user_id: key.user_id.clone(),
            started_ms: call.started_ms as i64,
        };
        let mut asking = None;
        if leasing {
            match start_on_lease(&key.id, hash, worst_case, call.end_user.as_deref(), call).await {
                LeaseStart::On(on) => return Ok((meter(worst_case, Some(on)), output)),
                LeaseStart::Ask(guard) => asking = Some(guard),
                LeaseStart::Alone => {}
            }
        }
        let lease_ask = asking.as_ref().map(|_| leases::ask(&key.id, worst_case, super::respond::random_bytes()));
        let ask = || Ask {
            request_id: call.request_id.clone(),
            key_id: key.id.clone(),
            hash: hash.to_string(),
            limit_micros: key.limit_micros,
            limit_reset: key.limit_reset.as_deref().and_then(Reset::parse),
            worst_case,
            min_to_run,
            caps: call.config.in_flight,
            lease_ms,
            lease: lease_ask.as_ref().map(|(ask, _)| ask.clone()),
            tokens: i64::try_from(prompt.saturating_add(output)).unwrap_or(i64::MAX),
            rates: key.rates,
            rate_default: call.config.rate_default,
            end_user: call.end_user.clone(),
            end_user_budget: key.end_user_budget,
            key_version: key.version,
            about: Some(about()),
        };
        let account = Account::of(&call.env, &key.user_id);
        // Before the ask leaves (the clock stands still between I/O): a lease's second counts from here.
        let asked_at = js_sys::Date::now() as i64;
        let mut answer = account.reserve(ask()).await.map_err(ApiError::internal)?;
        if let Reserved::KeyOutOfDate = answer {
            send_key_state(call, &account, &key.id).await?;
            answer = account.reserve(ask()).await.map_err(ApiError::internal)?;
        }
        let (reservation, resets_at_ms) = match answer {
            Reserved::Refused(KeyRefusal::NotPermitted) => {
                return Err(ApiError::forbidden(KeyRefusal::NotPermitted.message()))
            }
            Reserved::Refused(reason) => return Err(ApiError::unauthenticated(reason.message())),
            Reserved::TooMany(scope) => {
                return Err(ApiError::LimitReached {
                    message: format!("too many requests of this {scope} are in flight; retry when one finishes"),
                    retry_after_secs: 1,
                    limit_source: "in_flight",
                    lasting: false,
                })
            }
            Reserved::RateLimited(refusal) => {
                call.rate.set(Some(refusal.status));
                return Err(rate_limited(&refusal));
            }
            Reserved::KeyOutOfDate => {
                return Err(ApiError::internal("the account object did not take the key's latest state"))
            }
            Reserved::Decided { reservation, resets_at_ms, lease, rate } => {
                call.rate.set(rate);
                if let (Some(granted), Some((_, changes))) = (lease, &lease_ask) {
                    leases::granted(&key.user_id, &key.id, &granted, hash, (*changes, asked_at), call.now_ms());
                    // Given back when its use ends should no request start on it (this one is not on it).
                    call.ctx.wait_until(batch::return_leases(call.env.clone()));
                }
                (reservation, resets_at_ms)
            }
        };
        // The requests waiting for this lease try it now.
        drop(asking);
        // Only a key limit and an end user's budget have a reset to tell.
        let refusal = |source| {
            let windowed = matches!(source, LimitSource::KeyLimit | LimitSource::EndUserLimit);
            insufficient(source, resets_at_ms.filter(|_| windowed))
        };
        let (mut m, output) = match reservation {
            Reservation::Full { amount } => (meter(amount, None), output),
            Reservation::Partial { amount, source } => {
                // Nothing to cap (no output tokens) or not one output token affordable: the limit that capped it refuses.
                let affordable = pricing::affordable_output_tokens(&worst_rates, prompt, amount).min(output);
                let m = meter(amount, None);
                if affordable == 0 {
                    m.release(call, 402);
                    return Err(refusal(source));
                }
                (m, affordable)
            }
            Reservation::Refused { source } => return Err(refusal(source)),
        };
        if let Some(org_id) = &key.org_id {
            let tokens = i64::try_from(prompt.saturating_add(output)).unwrap_or(i64::MAX);
            let held_in_org = reserve_in_org(call, org_id, &m, tokens).await;
            // Told at release too when the outcome is unknown (an answer lost on its way back may leave a
            // hold the organization would count at its expiry): a failed settlement uncounts it.
            let held_or_unknown = match &held_in_org {
                Ok(()) => true,
                Err(e) => e.status() >= 500,
            };
            m.org_holds = held_or_unknown;
            if let Err(e) = held_in_org {
                m.release(call, e.status());
                return Err(e);
            }
        }
        Ok((m, output))
    }

    /// What this request costs and is charged (see `charge`).
    pub fn charge(&self, outcome: &Outcome) -> Charged {
        // A stream cut short after its provider told the prompt's usage: that, and the output estimated.
        if let (None, Some(so_far), Some(bytes)) = (&outcome.usage, &outcome.usage_so_far, outcome.delivered_bytes) {
            let usage = so_far.cut_short(ledger::estimate_tokens(bytes));
            let charged = charge(&self.price, self.reserved, self.prompt_bytes, Some(&usage), None);
            return Charged { estimated: true, ..charged };
        }
        let charged =
            charge(&self.price, self.reserved, self.prompt_bytes, outcome.usage.as_ref(), outcome.delivered_bytes);
        let billed = outcome.usage.as_ref().and_then(|u| u.cost).filter(|_| outcome.from_record);
        match billed.and_then(nearest_micros) {
            Some(floor) if floor > charged.cost => {
                Charged { cost: floor, amount: ledger::charge(floor, self.reserved), ..charged }
            }
            _ => charged,
        }
    }

    /// Settles after the response (`ctx.wait_until`).
    pub fn settle_later(self, call: &Call, outcome: Outcome) {
        let env = call.env.clone();
        call.ctx.wait_until(async move { self.settle(&env, outcome).await });
    }

    /// Gives the whole reservation back: the request failed before any answer.
    pub fn release(self, call: &Call, status: u16) {
        self.settle_later(call, Outcome::failed(status));
    }

    /// The usage record of this request.
    fn record(&self, outcome: &Outcome, charged: &Charged) -> UsageRecord {
        let upstream_cost = outcome.usage.as_ref().and_then(|u| u.cost).and_then(nearest_micros);
        UsageRecord {
            id: self.request_id.clone(),
            upstream_id: self.upstream_id.clone(),
            key_id: self.key_id.clone(),
            user_id: self.account_id.clone(),
            org_id: self.org_id.clone(),
            model: self.model.clone(),
            provider: self.provider.into(),
            prompt_tokens: charged.tokens.prompt,
            completion_tokens: charged.tokens.completion,
            reasoning_tokens: charged.tokens.reasoning,
            cached_tokens: charged.tokens.cache_read,
            cost_micros: charged.amount,
            upstream_cost_micros: upstream_cost,
            latency_ms: (js_sys::Date::now() - self.started_ms).max(0.0) as u64,
            status: outcome.status,
            streamed: outcome.streamed,
            cancelled: outcome.cancelled,
            estimated: charged.estimated,
            created_ms: self.started_ms as i64,
            end_user: self.end_user.clone(),
        }
    }

    /// Settles the account (retried until confirmed or given up on) and, once the account confirmed,
    /// for an organization's key, the organization's month; the usage record travels with the settlement.
    pub async fn settle(self, env: &Env, outcome: Outcome) {
        let charged = self.charge(&outcome);
        let mut notes = Vec::new();
        if outcome.cancelled {
            notes.push("(cancelled)");
        }
        if outcome.delivered_bytes.is_none() && outcome.usage.is_none() {
            notes.push("failed");
        } else if outcome.unanswered && outcome.usage.is_some() {
            notes.push("(answer not received whole: charged from the upstream's record)");
        } else if outcome.unanswered {
            notes.push("(answer not received whole: prompt estimated)");
        } else if charged.estimated {
            notes.push("(estimated from content delivered)");
        }
        let description = std::iter::once(self.model.as_str()).chain(notes).collect::<Vec<_>>().join(" ");
        let settlement = Settlement {
            request_id: self.request_id.clone(),
            cost: charged.cost,
            description,
            usage: Some(self.record(&outcome, &charged)),
            on_lease: self.lease.clone(),
        };
        let failed = outcome.delivered_bytes.is_none() && outcome.usage.is_none();
        // The account's drained leases go back with the settlement (and whatever else waits to be sent).
        let returns = || {
            let now = js_sys::Date::now() as i64;
            leases::take_drained(now, Some(&self.account_id)).into_iter().map(|(_, id)| id).collect()
        };
        if self.abandon_settle {
            return batch::abandon(&self.account_id, &self.key_id, settlement);
        }
        let confirmed = batch::settle(env, &self.account_id, &self.key_id, settlement, self.lease_ms, returns).await;
        // The organization counts what the account charged, so it is told once the account has confirmed
        // the charge. A settlement given up on is closed by the account at its evidence, which may be more
        // than this charge; the organization's hold, not told, then counts all it held at its expiry. So
        // with one that came after the account had closed its request so (it charged nothing more).
        if let (Some(org_id), true, Confirmed::Charged) = (self.org_id.as_deref(), self.org_holds, confirmed) {
            let tokens =
                i64::try_from(charged.tokens.prompt.saturating_add(charged.tokens.completion)).unwrap_or(i64::MAX);
            Org::of(env, org_id).settle(&self.request_id, tokens, charged.amount, failed, self.lease_ms).await;
        }
        batch::return_leases(env.clone()).await;
        // Last, what tasks since ended left in line here (for any account).
        batch::rescue_stranded(env).await;
    }
}

/// How a request of a key with budget leases starts.
enum LeaseStart {
    /// On this isolate's lease: no round trip.
    On(OnLease),
    /// It asks the object for a lease along with its reservation (others wait while it holds the guard).
    Ask(leases::AskGuard),
    /// It reserves on its own.
    Alone,
}

/// The account object missed a change to the key (its message was lost, `keys::publish`): it is sent
/// the key's state as D1 has it, deleted or not, before it decides anything on the key.
async fn send_key_state(call: &Call, account: &Account<'_>, key_id: &str) -> Result<(), ApiError> {
    let db = env::db(&call.env).map_err(ApiError::internal)?;
    let row = match crate::store::keys::get_live(&db, key_id).await? {
        Some(row) => Some(row),
        None => crate::store::keys::get_deleted(&db, key_id).await?,
    };
    let row = row.ok_or_else(|| ApiError::unauthenticated(KeyRefusal::Deleted.message()))?;
    account.put_key(super::keys::key_state(&row)).await.map_err(ApiError::internal)
}

/// Starts the request on this isolate's lease for the key when that covers its worst case. Else one
/// request asks the object for a lease (with its own reservation) while the others wait for the answer
/// (polling their own timers, at most `LEASE_WAIT_POLLS` ms) and try again; those it cannot cover
/// reserve on their own.
async fn start_on_lease(key_id: &str, hash: &str, worst_case: i64, end_user: Option<&str>, call: &Call) -> LeaseStart {
    let on_lease = |now| {
        let end_user = end_user.map(String::from);
        leases::take(key_id, &call.request_id, hash, worst_case, now).map(|lease_id| OnLease {
            lease_id,
            worst_case,
            end_user,
        })
    };
    if let Some(on) = on_lease(call.now_ms()) {
        return LeaseStart::On(on);
    }
    if let Some(guard) = leases::start_asking(key_id) {
        return LeaseStart::Ask(guard);
    }
    for _ in 0..LEASE_WAIT_POLLS {
        worker::Delay::from(std::time::Duration::from_millis(1)).await;
        if !leases::is_asking(key_id) {
            break;
        }
    }
    on_lease(call.now_ms()).map_or(LeaseStart::Alone, LeaseStart::On)
}

/// Keeps a streaming request's reservation alive: a beat every `every_ms`, on a timer (not only
/// when chunks arrive, so a stream whose reader pauses keeps its reservation), each telling the
/// account object what the upstream has generated so far (what a close would charge). Should the
/// object answer that it no longer holds the reservation, the stream is told to end.
pub struct Heartbeat {
    /// Content bytes delivered so far (the relay keeps it current).
    pub progress: Rc<Cell<u64>>,
    /// The object no longer holds the reservation.
    pub lost: Rc<Cell<bool>>,
    /// The request's key may no longer run requests (the reservation is still held, to settle).
    pub stopped: Rc<Cell<bool>>,
    /// The stream still runs (the relay clears it when it ends).
    pub running: Rc<Cell<bool>>,
    /// Dropped with the heartbeat: the beats stop, their timer cleared.
    _stop: oneshot::Sender<()>,
}

/// When the first heartbeat of a request waiting for its upstream comes, at the latest: well inside the
/// 30 s the runtime gives a request's task after its client hung up.
const FIRST_WAIT_BEAT_MS: u64 = 10_000;

impl Heartbeat {
    /// Beats for a request waiting for its upstream (a stream's relay beats on its own once it has
    /// started): a client that hangs up has the runtime end the task 30 s later, before its settlement,
    /// and the close then charges what the last beat reported (the prompt, estimated) instead of nothing.
    pub fn waiting(meter: &Meter, call: &Call) -> Self {
        let every_ms = call.config.heartbeat_every_ms();
        Self::start(meter, &call.env, every_ms.min(FIRST_WAIT_BEAT_MS), every_ms)
    }

    /// Beats after `first_ms`, then every `every_ms`, while the heartbeat lives and `running` is set.
    pub fn start(meter: &Meter, env: &Env, first_ms: u64, every_ms: u64) -> Self {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let this = Self {
            progress: Rc::default(),
            lost: Rc::default(),
            stopped: Rc::default(),
            running: Rc::new(Cell::new(true)),
            _stop: stop,
        };
        let (progress, lost, running) = (this.progress.clone(), this.lost.clone(), this.running.clone());
        let stopped_key = this.stopped.clone();
        let (env, account_id, request_id) = (env.clone(), meter.account_id.clone(), meter.request_id.clone());
        let on_lease = meter.lease.clone();
        let (price, reserved, prompt_bytes, lease_ms) =
            (meter.price, meter.reserved, meter.prompt_bytes, meter.lease_ms);
        // A request on a lease has no reservation yet: its first beat makes one, which notes what it is.
        let mut about = meter.lease.as_ref().map(|_| About {
            model: meter.model.clone(),
            org_id: meter.org_id.clone(),
            user_id: meter.account_id.clone(),
            started_ms: meter.started_ms as i64,
        });
        wasm_bindgen_futures::spawn_local(async move {
            let mut wait_ms = first_ms;
            loop {
                let beat = worker::Delay::from(std::time::Duration::from_millis(wait_ms));
                if let Either::Right(_) = select(beat, &mut stopped).await {
                    return;
                }
                wait_ms = every_ms;
                if !running.get() {
                    return;
                }
                let evidence = charge(&price, reserved, prompt_bytes, None, Some(progress.get())).amount;
                // Each beat is given up by the next one's time (at most a settlement's try), so one lost on
                // its way does not stop the beats after it.
                let try_ms = u32::try_from(every_ms).unwrap_or(u32::MAX).min(SETTLE_TRY_MS);
                let account = Account::of(&env, &account_id);
                let answer = account.touch(&request_id, evidence, lease_ms, on_lease.clone(), about.clone(), try_ms);
                let answer = answer.await;
                if answer.is_ok() {
                    about = None; // the reservation the first beat made has it
                }
                match answer {
                    Ok(Beat::Held) => {}
                    // Beats go on: the reservation stays held until the request settles.
                    Ok(Beat::Stopped) => stopped_key.set(true),
                    Ok(Beat::NotHeld) => return lost.set(true),
                    Err(e) => crate::log::job_error("heartbeat", &e),
                }
            }
        });
        this
    }
}

/// Holds the request against the organization's monthly limits (a second round trip, for org keys only).
async fn reserve_in_org(call: &Call, org_id: &str, m: &Meter, tokens: i64) -> Result<(), ApiError> {
    let org = super::orgs::active(call, org_id).await?;
    let answer = Org::of(&call.env, org_id)
        .reserve(&m.request_id, org.state(), tokens, m.reserved, m.lease_ms)
        .await
        .map_err(ApiError::internal)?;
    if call.config.faults.lose_org_answer && crate::js::first_time("lose_org_answer") {
        return Err(ApiError::internal("the organization's answer was lost on its way back (a test fault)"));
    }
    match answer {
        Ok(()) => Ok(()),
        // Changed since this isolate read it: read again from then on.
        Err(OrgRefusal::Suspended) => {
            super::orgs::forget(call, org_id);
            Err(ApiError::forbidden(format!("the organization {} is no longer active", org.name)))
        }
        Err(OrgRefusal::Limit(OrgLimitHit::Cost, resets_at_ms)) => {
            Err(insufficient(LimitSource::OrgLimit, Some(resets_at_ms)))
        }
        Err(OrgRefusal::Limit(hit, resets_at_ms)) => Err(ApiError::LimitReached {
            message: format!(
                "the organization's monthly {} limit is reached; it resets at {}",
                if hit == OrgLimitHit::Requests { "request" } else { "token" },
                crate::domain::time::to_iso(resets_at_ms)
            ),
            retry_after_secs: ((resets_at_ms - call.now_ms()).max(0) / 1000) as u64,
            limit_source: if hit == OrgLimitHit::Requests { "org_requests" } else { "org_tokens" },
            // The organization counts its requests in flight at their worst: one settling may make room.
            lasting: false,
        }),
    }
}

/// A key's per-minute limit refused the request: 429, with when to retry (whole seconds, rounded up).
fn rate_limited(refusal: &RateRefusal) -> ApiError {
    let (message, source) = match refusal.hit {
        RateHit::Requests => ("this key's requests per minute limit is reached", "key_rpm"),
        RateHit::Tokens => ("this key's tokens per minute limit is reached", "key_tpm"),
        RateHit::TooLarge => (
            "this request may use more tokens than this key's tokens per minute limit allows; lower max_tokens or shorten the prompt",
            "key_tpm",
        ),
    };
    let secs = (refusal.retry_after_ms.max(1) + 999) / 1000;
    let lasting = refusal.hit == RateHit::TooLarge; // it would be refused however long it waits
    ApiError::LimitReached { message: message.into(), retry_after_secs: secs as u64, limit_source: source, lasting }
}

fn insufficient(source: LimitSource, resets_at_ms: Option<i64>) -> ApiError {
    ApiError::InsufficientCredits { limit: source, resets_at_ms }
}
