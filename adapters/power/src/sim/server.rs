//! The simulator's HTTP side: tokens, the rate limit, faults, and the five calls.
// Handlers answer early with a ready HTTP response or an interface error as their `Err`;
// boxing it would only add an allocation per refused call in a test server.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::serve::ListenerExt;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use shuiwu_wire::Clock;
use tokio::net::TcpListener;

use super::faults::{Fault, Injection, Target, When};
use super::state::{ApiError, Applications, Effect, decode_cursor, encode_cursor};
use crate::wire::{Application, PowerStatus, parse_time};

/// How the simulated power side behaves.
#[derive(Debug, Clone)]
pub struct PowerSimConfig {
    pub client_id: String,
    pub client_secret: String,
    /// Lifetime of an access token.
    pub token_ttl_secs: u64,
    /// Calls per second per client over any one-second window, token calls included; `None`:
    /// no limit. The interface's is 5.
    pub rate_limit_per_sec: Option<u32>,
    /// Per-mille of calls answered at once with a transient fault, before anything changed.
    pub random_fault_per_mille: u64,
    /// Per-mille of changing calls (create, link, water-status) whose change is made and
    /// whose answer is then lost: a reset, a 504, or a hang.
    pub random_after_fault_per_mille: u64,
    /// Per-mille of calls that hang for `hang_secs` before anything changed.
    pub random_hang_per_mille: u64,
    pub hang_secs: u64,
    pub seed: u64,
}

impl PowerSimConfig {
    /// The interface's limits, no faults.
    pub fn contract_defaults(seed: u64) -> Self {
        PowerSimConfig {
            client_id: "kmsw-gateway".into(),
            client_secret: "power-sim-secret".into(),
            token_ttl_secs: 3600,
            rate_limit_per_sec: Some(5),
            random_fault_per_mille: 0,
            random_after_fault_per_mille: 0,
            random_hang_per_mille: 0,
            hang_secs: 30,
            seed,
        }
    }
}

/// What the simulator saw and did, for tests and the demo's summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    pub requests: u64,
    pub tokens_issued: u64,
    pub invalid_token: u64,
    pub invalid_client: u64,
    pub rate_limited: u64,
    pub created: u64,
    pub replayed: u64,
    pub key_reused: u64,
    pub duplicate_external_id: u64,
    pub version_mismatch: u64,
    pub invalid_transition: u64,
    pub linked: u64,
    pub water_status_applied: u64,
    pub water_status_no_op: u64,
    pub faults_before: u64,
    pub faults_after: u64,
    /// Calls admitted: not refused by the limit, a token or a fault before the call.
    pub answered: u64,
    /// Webhook events acknowledged by the receiver, and deliveries it refused or missed
    /// (each retried, signed afresh).
    pub webhooks_delivered: u64,
    pub webhook_failures: u64,
}

struct SimState {
    apps: Applications,
    /// Applications the listing shows malformed (their `applicant` missing), as a platform
    /// with a bug might.
    malformed: std::collections::HashSet<String>,
    tokens: HashMap<String, DateTime<Utc>>,
    faults: VecDeque<Injection>,
    recent: VecDeque<Instant>,
    random: u64,
    stats: SimStats,
}

struct Inner {
    cfg: PowerSimConfig,
    clock: Arc<dyn Clock>,
    state: Mutex<SimState>,
    /// Where changes are pushed, once a receiver is configured.
    push: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Value>>>,
    events: std::sync::atomic::AtomicU64,
}

/// The simulated power side. Cheap to clone; every clone is the same power side.
#[derive(Clone)]
pub struct PowerSim(Arc<Inner>);

/// A running simulator; stops when dropped.
pub struct PowerSimServer {
    pub addr: SocketAddr,
    pub sim: PowerSim,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PowerSimServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PowerSimServer {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client configuration for this simulator: its address and credentials, every other
    /// setting at its default.
    pub fn client_config(&self) -> crate::PowerConfig {
        let cfg = self.sim.config();
        crate::PowerConfig::new(
            self.base_url(),
            cfg.client_id.clone(),
            shuiwu_wire::Secret::new(cfg.client_secret.clone()),
        )
    }
}

impl PowerSim {
    pub fn new(cfg: PowerSimConfig, clock: Arc<dyn Clock>) -> Self {
        let random = cfg.seed | 1;
        PowerSim(Arc::new(Inner {
            cfg,
            clock,
            state: Mutex::new(SimState {
                apps: Applications::default(),
                malformed: Default::default(),
                tokens: HashMap::new(),
                faults: VecDeque::new(),
                recent: VecDeque::new(),
                random,
                stats: SimStats::default(),
            }),
            push: Mutex::new(None),
            events: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// Pushes every change from now on to `url` (the water side's `POST /webhooks/power`),
    /// signed with `secret`, in order, each event retried with backoff (signed afresh, with a
    /// new timestamp) until it is acknowledged. Applications that existed before are not
    /// pushed: polling finds them. Call from within a runtime.
    pub fn push_to(&self, url: String, secret: String) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
        *self.0.push.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let sim = self.clone();
        tokio::spawn(async move {
            // Fails only when a provider is already installed, which serves as well.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let Ok(http) = reqwest::Client::builder().timeout(Duration::from_secs(5)).build() else {
                tracing::error!("power simulator: no HTTP client for webhooks");
                return;
            };
            while let Some(event) = rx.recv().await {
                let body = serde_json::to_vec(&event).unwrap_or_default();
                let mut wait = Duration::from_millis(50);
                for _ in 0..12 {
                    let timestamp = sim.now().timestamp().to_string();
                    let signature = crate::webhook::sign(secret.as_bytes(), &timestamp, &body);
                    let sent = http
                        .post(&url)
                        .header("Content-Type", "application/json")
                        .header(crate::webhook::TIMESTAMP_HEADER, &timestamp)
                        .header(crate::webhook::SIGNATURE_HEADER, signature)
                        .body(body.clone())
                        .send()
                        .await;
                    if sent.as_ref().is_ok_and(|r| r.status().is_success()) {
                        sim.lock().stats.webhooks_delivered += 1;
                        break;
                    }
                    sim.lock().stats.webhook_failures += 1;
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        });
    }

    /// Queues the push of a change, if a receiver is configured.
    fn emit(&self, created: bool, app: &Application) {
        let push = self.0.push.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = push.as_ref() {
            let n = self.0.events.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let event = json!({
                "eventId": format!("evt_{n:08}"),
                "type": if created { "application.created" } else { "application.updated" },
                "application": app,
            });
            // A receiver gone (the sender's task ended) only stops the pushes.
            let _ = tx.send(event);
        }
    }

    /// Serves on `addr` (port 0 picks a free one) until the returned server is dropped.
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<PowerSimServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!("power simulator: TCP_NODELAY not set: {e}");
            }
        });
        let app = Router::new()
            .route("/oauth2/token", post(token))
            .route("/api/joint/v2/applications", post(create).get(list))
            .route("/api/joint/v2/applications/{id}", get(one))
            .route("/api/joint/v2/applications/{id}/link", put(link))
            .route("/api/joint/v2/applications/{id}/water-status", put(water_status))
            // Simulator controls, not part of the interface.
            .route("/__sim/faults", post(inject_fault))
            .route("/__sim/stats", get(stats))
            .with_state(self.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("power simulator stopped: {e}");
            }
        });
        Ok(PowerSimServer {
            addr,
            sim: self,
            task,
        })
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // The state stays consistent between statements; a panicking handler leaves it usable.
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn config(&self) -> &PowerSimConfig {
        &self.0.cfg
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.0.clock.now()
    }

    pub fn stats(&self) -> SimStats {
        self.lock().stats.clone()
    }

    /// Queues a fault for the next matching calls.
    pub fn inject(&self, injection: Injection) {
        self.lock().faults.push_back(injection);
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Makes the listing show application `id` without its `applicant`, every time, as a
    /// power side with a defect would.
    pub fn malform_in_listing(&self, id: &str) {
        self.lock().malformed.insert(id.to_string());
    }

    /// Revokes every token issued: the next call with one answers 401 `invalid_token`.
    pub fn revoke_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// Every application, in listing order.
    pub fn applications(&self) -> Vec<Application> {
        self.lock().apps.all().cloned().collect()
    }

    pub fn application(&self, id: &str) -> Option<Application> {
        self.lock().apps.get(id).cloned()
    }

    /// Adds an application as the power side's own (a power-origin application, usually),
    /// changed now. Returns its id.
    pub fn insert(&self, app: Application) -> String {
        let now = self.now();
        let (id, stored) = {
            let mut st = self.lock();
            let id = st.apps.insert(app, now);
            (id.clone(), st.apps.get(&id).cloned())
        };
        if let Some(a) = stored {
            self.emit(true, &a);
        }
        id
    }

    /// Adds several applications in one millisecond, as one batch of changes on the power
    /// side: the listing must page through them without skipping or repeating one.
    pub fn insert_batch(&self, apps: Vec<Application>) -> Vec<String> {
        let now = self.now();
        let stored: Vec<Application> = {
            let mut st = self.lock();
            let ids: Vec<String> = apps.into_iter().map(|a| st.apps.insert(a, now)).collect();
            ids.iter().filter_map(|id| st.apps.get(id).cloned()).collect()
        };
        for a in &stored {
            self.emit(true, a);
        }
        stored.into_iter().map(|a| a.application_id).collect()
    }

    /// The power side's own progress on an application. Returns the new version.
    pub fn set_status(&self, id: &str, status: PowerStatus) -> Option<u64> {
        let now = self.now();
        let (version, stored) = {
            let mut st = self.lock();
            let v = st.apps.set_status(id, status, now);
            (v, st.apps.get(id).cloned())
        };
        if let (Some(_), Some(a)) = (version, stored) {
            self.emit(false, &a);
        }
        version
    }

    /// `Err(response)`: the call is refused before anything is looked at (rate limit, token,
    /// an injected or random fault before the change).
    fn admit(&self, target: Target, headers: &HeaderMap) -> Result<(), Admission> {
        let now = self.now();
        let mut st = self.lock();
        st.stats.requests += 1;
        if let Some(limit) = self.0.cfg.rate_limit_per_sec {
            let wall = Instant::now();
            while st
                .recent
                .front()
                .is_some_and(|t| wall.duration_since(*t) >= Duration::from_secs(1))
            {
                st.recent.pop_front();
            }
            if st.recent.len() >= limit as usize {
                st.stats.rate_limited += 1;
                // Alternate the two forms the interface allows.
                let as_date = st.stats.rate_limited.is_multiple_of(2);
                return Err(Admission::Fault(Fault::RateLimited { secs: 1, as_date }));
            }
            st.recent.push_back(wall);
        }
        if target != Target::Token {
            let token = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default();
            if st.tokens.get(token).is_none_or(|exp| *exp <= now) {
                st.stats.invalid_token += 1;
                return Err(Admission::Refused(ApiError {
                    status: 401,
                    error: "invalid_token",
                    message: "the access token is expired or revoked".into(),
                    extra: None,
                }));
            }
        }
        if let Some(f) = take_fault(&mut st, target, When::Before, &self.0.cfg) {
            st.stats.faults_before += 1;
            if f == Fault::TokenRevoked {
                st.tokens.clear();
            }
            return Err(Admission::Fault(f));
        }
        st.stats.answered += 1;
        Ok(())
    }

    /// Runs a call that changes something, then draws a fault that loses its answer.
    async fn change(
        &self,
        target: Target,
        headers: &HeaderMap,
        op: impl FnOnce(&mut Applications, DateTime<Utc>) -> Result<(Effect, Application), ApiError>,
    ) -> Response {
        if let Err(a) = self.admit(target, headers) {
            return a.respond(self).await;
        }
        let now = self.now();
        let (answer, after) = {
            let mut st = self.lock();
            let answer = op(&mut st.apps, now);
            count(&mut st.stats, target, &answer);
            let after = match &answer {
                Ok((Effect::Created | Effect::Changed, _)) => {
                    take_fault(&mut st, target, When::After, &self.0.cfg)
                }
                _ => None,
            };
            if after.is_some() {
                st.stats.faults_after += 1;
            }
            (answer, after)
        };
        // Every change is pushed, the water side's own included.
        if let Ok((effect @ (Effect::Created | Effect::Changed), app)) = &answer {
            self.emit(*effect == Effect::Created, app);
        }
        if let Some(f) = after {
            return Admission::Fault(f).respond(self).await;
        }
        match answer {
            Ok((effect, app)) => {
                let status = if effect == Effect::Created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                json_response(status, &serde_json::to_value(&app).unwrap_or_default())
            }
            Err(e) => error_response(&e),
        }
    }
}

fn count(stats: &mut SimStats, target: Target, answer: &Result<(Effect, Application), ApiError>) {
    match (target, answer) {
        (_, Ok((Effect::Created, _))) => stats.created += 1,
        (_, Ok((Effect::Replayed, _))) => stats.replayed += 1,
        (Target::Link, Ok((Effect::Changed, _))) => stats.linked += 1,
        (Target::WaterStatus, Ok((Effect::Changed, _))) => stats.water_status_applied += 1,
        (Target::WaterStatus, Ok((Effect::NoOp, _))) => stats.water_status_no_op += 1,
        (_, Err(e)) => match e.error {
            "idempotency_key_reused" => stats.key_reused += 1,
            "duplicate_external_id" => stats.duplicate_external_id += 1,
            "version_mismatch" => stats.version_mismatch += 1,
            "invalid_transition" => stats.invalid_transition += 1,
            _ => {}
        },
        _ => {}
    }
}

/// Why a call was not handled.
enum Admission {
    Fault(Fault),
    Refused(ApiError),
}

impl Admission {
    async fn respond(self, sim: &PowerSim) -> Response {
        let fault = match self {
            Admission::Refused(e) => return error_response(&e),
            Admission::Fault(f) => f,
        };
        let plain = |status: u16, error: &'static str| {
            error_response(&ApiError {
                status,
                error,
                message: "simulated fault".into(),
                extra: None,
            })
        };
        match fault {
            Fault::Internal => plain(500, "internal_error"),
            Fault::Unavailable => plain(503, "service_unavailable"),
            Fault::GatewayTimeout => plain(504, "gateway_timeout"),
            Fault::TokenRevoked => plain(401, "invalid_token"),
            Fault::Reset => {
                let stream = futures::stream::iter(vec![Err::<Bytes, _>(std::io::Error::other(
                    "connection reset by simulator",
                ))]);
                Response::new(Body::from_stream(stream))
            }
            Fault::Hang { secs } => {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                plain(504, "gateway_timeout")
            }
            Fault::RateLimited { secs, as_date } => {
                let mut r = plain(429, "rate_limited");
                let value = if as_date {
                    // An HTTP-date has whole seconds: round up, so the wait is never shorter.
                    let at = SystemTime::from(sim.now()) + Duration::from_secs(secs + 1);
                    httpdate_value(at)
                } else {
                    secs.to_string()
                };
                if let Ok(v) = HeaderValue::from_str(&value) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                r
            }
        }
    }
}

fn httpdate_value(at: SystemTime) -> String {
    // The simulator needs only the preferred IMF-fixdate form, which `chrono` writes.
    let t: DateTime<Utc> = at.into();
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// The fault the next call gets: an injected one first, else a random one at the configured
/// rates.
fn take_fault(st: &mut SimState, target: Target, when: When, cfg: &PowerSimConfig) -> Option<Fault> {
    if let Some(pos) = st
        .faults
        .iter()
        .position(|f| f.when == when && (f.target == Target::Any || f.target == target))
    {
        let injection = &mut st.faults[pos];
        let fault = injection.fault;
        injection.times = injection.times.saturating_sub(1);
        if injection.times == 0 {
            st.faults.remove(pos);
        }
        return Some(fault);
    }
    let changing = matches!(target, Target::Create | Target::Link | Target::WaterStatus);
    let mut draw = |per_mille: u64| {
        st.random = mix(st.random);
        per_mille > 0 && st.random % 1000 < per_mille
    };
    match when {
        When::Before if draw(cfg.random_fault_per_mille) => {
            let quick = [
                Fault::Internal,
                Fault::Unavailable,
                Fault::GatewayTimeout,
                Fault::Reset,
            ];
            st.random = mix(st.random);
            Some(quick[(st.random % quick.len() as u64) as usize])
        }
        When::Before if draw(cfg.random_hang_per_mille) => Some(Fault::Hang { secs: cfg.hang_secs }),
        When::After if changing && draw(cfg.random_after_fault_per_mille) => {
            let lost = [
                Fault::GatewayTimeout,
                Fault::Reset,
                Fault::Hang { secs: cfg.hang_secs },
            ];
            st.random = mix(st.random);
            Some(lost[(st.random % lost.len() as u64) as usize])
        }
        _ => None,
    }
}

/// SplitMix64: a small, seedable, well-mixed sequence for the simulator's random faults.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, serde_json::to_vec(body).unwrap_or_default()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn error_response(e: &ApiError) -> Response {
    json_response(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.body(),
    )
}

fn bad(status: u16, error: &'static str, message: impl Into<String>) -> Response {
    error_response(&ApiError {
        status,
        error,
        message: message.into(),
        extra: None,
    })
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn json_body(body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|e| bad(400, "invalid_json", format!("body: {e}")))
}

async fn token(State(sim): State<PowerSim>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(a) = sim.admit(Target::Token, &headers) {
        return a.respond(&sim).await;
    }
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return bad(
            400,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        );
    }
    // client_secret_basic: Basic base64(form-encoded id ":" form-encoded secret).
    let basic = header_str(&headers, "authorization")
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|pair| {
            let (id, secret) = pair.split_once(':')?;
            let dec = |s: &str| -> String {
                form_urlencoded::parse(format!("v={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            Some((dec(id), dec(secret)))
        });
    let (id, secret) = match basic {
        Some(pair) => pair,
        None => (
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned().unwrap_or_default(),
        ),
    };
    let cfg = sim.config();
    if id != cfg.client_id || secret != cfg.client_secret {
        sim.lock().stats.invalid_client += 1;
        return bad(401, "invalid_client", "unknown client or wrong secret");
    }
    let now = sim.now();
    let mut st = sim.lock();
    st.random = mix(st.random);
    let value = format!("tok-{:016x}{:08x}", st.random, st.stats.tokens_issued);
    st.tokens.insert(
        value.clone(),
        now + chrono::Duration::seconds(cfg.token_ttl_secs as i64),
    );
    st.stats.tokens_issued += 1;
    json_response(
        StatusCode::OK,
        &json!({"access_token": value, "token_type": "Bearer", "expires_in": cfg.token_ttl_secs}),
    )
}

async fn create(State(sim): State<PowerSim>, headers: HeaderMap, body: Bytes) -> Response {
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let key = header_str(&headers, "idempotency-key").map(str::to_string);
    sim.change(Target::Create, &headers, |apps, now| {
        apps.create(key.as_deref(), &body, now)
    })
    .await
}

async fn link(
    State(sim): State<PowerSim>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let if_match = header_str(&headers, "if-match").map(str::to_string);
    sim.change(Target::Link, &headers, |apps, now| {
        apps.link(&id, if_match.as_deref(), &body, now)
    })
    .await
}

async fn water_status(
    State(sim): State<PowerSim>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let if_match = header_str(&headers, "if-match").map(str::to_string);
    sim.change(Target::WaterStatus, &headers, |apps, now| {
        apps.water_status(&id, if_match.as_deref(), &body, now)
    })
    .await
}

async fn one(State(sim): State<PowerSim>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Err(a) = sim.admit(Target::Get, &headers) {
        return a.respond(&sim).await;
    }
    match sim.application(&id) {
        Some(app) => json_response(StatusCode::OK, &serde_json::to_value(&app).unwrap_or_default()),
        None => bad(404, "not_found", format!("no application {id}")),
    }
}

async fn list(State(sim): State<PowerSim>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    if let Err(a) = sim.admit(Target::List, &headers) {
        return a.respond(&sim).await;
    }
    let params: HashMap<String, String> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    // A `+` sent bare arrives as a space here and fails to parse, as on the real platform.
    let after = match params.get("updatedAfter") {
        None => None,
        Some(t) => match parse_time(t) {
            Some(t) => Some(t),
            None => {
                return bad(
                    400,
                    "invalid_parameter",
                    format!("updatedAfter {t:?} is not an RFC 3339 time"),
                );
            }
        },
    };
    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None => 50,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => return bad(400, "invalid_parameter", "limit is 1 to 100"),
    };
    let cursor = match params.get("cursor") {
        None => None,
        Some(c) => match decode_cursor(c) {
            Some(p) => Some(p),
            None => return bad(400, "invalid_parameter", "unknown cursor"),
        },
    };
    let (items, next, malformed) = {
        let st = sim.lock();
        let (items, next) = st.apps.list(after, limit, cursor);
        (items, next, st.malformed.clone())
    };
    let items: Vec<Value> = items
        .into_iter()
        .map(|a| {
            let broken = malformed.contains(&a.application_id);
            let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
            if broken && let Some(o) = v.as_object_mut() {
                o.remove("applicant");
            }
            v
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({ "items": items, "nextCursor": next.map(encode_cursor) }),
    )
}

async fn inject_fault(State(sim): State<PowerSim>, body: Bytes) -> Response {
    match serde_json::from_slice::<Injection>(&body) {
        Ok(i) => {
            sim.inject(i);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => bad(400, "invalid_json", e.to_string()),
    }
}

async fn stats(State(sim): State<PowerSim>) -> Response {
    json_response(
        StatusCode::OK,
        &serde_json::to_value(sim.stats()).unwrap_or_default(),
    )
}
