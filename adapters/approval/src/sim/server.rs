//! The simulator's HTTP side: authentication, limits, faults, and the three calls.
// Handlers answer early with a ready HTTP response as their `Err`; boxing it would only add an
// allocation per rejected request in a test server.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use shuiwu_wire::{Clock, beijing, format_beijing, parse_beijing};
use tokio::net::TcpListener;

use super::faults::{Fault, Injection, Target};
use super::generate::{Generator, attachment_content, mix};
use super::state::Projects;
use crate::sign::{SignMethod, canonical_query, string_to_sign, verify};

/// How the simulated platform behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub app_id: String,
    pub app_secret: String,
    pub generator: Generator,
    /// Longest visibility lag; the contract's is 5 minutes.
    pub lag: Duration,
    /// Requests per second per appId over any one-second window; `None`: no limit.
    pub rate_limit_per_sec: Option<u32>,
    /// Calls per day per appId; `None`: no quota.
    pub daily_quota: Option<u64>,
    /// Every n-th listing request changes the first project of the page it just served,
    /// which moves it to a later position, as a project updated while a client pages does.
    pub drift_every: Option<u64>,
    /// Per-mille of requests that draw a random transient fault answered at once (demo chaos).
    pub random_fault_per_mille: u64,
    /// Per-mille of requests that hang (30 s, past a client's read timeout), drawn after the
    /// quick faults: what a platform's overloaded backend does now and then.
    pub random_hang_per_mille: u64,
    /// Full records served besides the generated ones.
    pub fixtures: Vec<Value>,
}

impl SimConfig {
    /// A platform with the contract's limits and `count` projects over the `days` before `now`.
    pub fn contract_defaults(seed: u64, count: u64, now: DateTime<Utc>, days: i64) -> Self {
        SimConfig {
            app_id: "kmsw-sim".into(),
            app_secret: "sim-secret".into(),
            generator: Generator {
                seed,
                count,
                start: now - Duration::days(days),
                end: now - Duration::minutes(1),
            },
            lag: Duration::minutes(5),
            rate_limit_per_sec: Some(10),
            daily_quota: Some(50_000),
            drift_every: None,
            random_fault_per_mille: 0,
            random_hang_per_mille: 0,
            fixtures: Vec::new(),
        }
    }
}

/// What the simulator counted; tests assert on it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimStats {
    pub requests: u64,
    pub lists: u64,
    pub details: u64,
    pub attachments: u64,
    pub auth_rejected: u64,
    pub rate_limited: u64,
    pub quota_refused: u64,
    pub faults_injected: u64,
    pub drift_changes: u64,
    /// Requests answered while an injected hang was holding another one: how much a client
    /// kept doing instead of waiting for the hung request.
    pub answered_during_hang: u64,
    /// Requests that drew a hang (injected or random).
    pub hangs: u64,
}

struct SimState {
    projects: Projects,
    faults: VecDeque<Injection>,
    nonces: HashMap<String, DateTime<Utc>>,
    nonce_order: VecDeque<(DateTime<Utc>, String)>,
    recent: VecDeque<Instant>,
    quota_day: Option<NaiveDate>,
    quota_used: u64,
    exhausted_day: Option<NaiveDate>,
    maintenance_until: Option<DateTime<Utc>>,
    stats: SimStats,
    random: u64,
    /// Attachment answers still to be corrupted in transit (body ≠ announced hash).
    corrupt_attachments: u32,
    /// Projects whose detail call always answers with a fault (a platform bug for one record).
    failing_projects: HashMap<String, Fault>,
    /// Hung requests in progress.
    hanging: u32,
}

/// What a test runs at every request the simulator receives, before answering it.
type RequestHook = Arc<dyn Fn(&Simulator) + Send + Sync>;

struct Inner {
    cfg: SimConfig,
    clock: Arc<dyn Clock>,
    state: Mutex<SimState>,
    on_request: Mutex<Option<RequestHook>>,
}

/// A handle on a running simulator; cloning shares it. The server stops when the last
/// [`SimServer`] is dropped.
#[derive(Clone)]
pub struct Simulator(Arc<Inner>);

/// A running simulator and its address.
pub struct SimServer {
    pub addr: SocketAddr,
    pub sim: Simulator,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SimServer {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Simulator {
    pub fn new(cfg: SimConfig, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let mut projects = Projects::new(cfg.generator.clone(), cfg.lag);
        for (n, doc) in cfg.fixtures.iter().enumerate() {
            projects
                .insert(doc.clone())
                .map_err(|e| format!("fixture {}: {e}", n + 1))?;
        }
        let random = cfg.generator.seed;
        Ok(Simulator(Arc::new(Inner {
            cfg,
            clock,
            on_request: Mutex::new(None),
            state: Mutex::new(SimState {
                projects,
                faults: VecDeque::new(),
                nonces: HashMap::new(),
                nonce_order: VecDeque::new(),
                recent: VecDeque::new(),
                quota_day: None,
                quota_used: 0,
                exhausted_day: None,
                maintenance_until: None,
                stats: SimStats::default(),
                random,
                corrupt_attachments: 0,
                failing_projects: HashMap::new(),
                hanging: 0,
            }),
        })))
    }

    /// Serves on `addr` (port 0 picks a free one) until the returned server is dropped.
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<SimServer> {
        // TCP_NODELAY: without it, a kept-alive client's small requests wait on Nagle's
        // algorithm and a benchmark measures the simulator's stalls, not the gateway.
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!("simulator: TCP_NODELAY not set: {e}");
            }
        });
        let app = Router::new()
            .route("/api/v1/projects", get(list))
            .route("/api/v1/projects/{xmdm}", get(detail))
            .route("/api/v1/attachments/{fjid}", get(attachment))
            // Simulator controls, not part of the platform: inject faults, read counters.
            .route("/__sim/faults", axum::routing::post(inject_fault))
            .route("/__sim/stats", get(stats))
            .with_state(self.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("simulator stopped: {e}");
            }
        });
        Ok(SimServer {
            addr,
            sim: self,
            task,
        })
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // The state stays consistent between statements; a panicking handler leaves it usable.
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn config(&self) -> &SimConfig {
        &self.0.cfg
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.0.clock.now()
    }

    /// Queues a fault for the next matching requests.
    pub fn inject(&self, injection: Injection) {
        self.lock().faults.push_back(injection);
    }

    /// Runs `hook` at every request, before it is answered: a test drives platform time and
    /// changes by the client's progress, not by the wall clock.
    pub fn on_request(&self, hook: impl Fn(&Simulator) + Send + Sync + 'static) {
        *self.0.on_request.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(hook));
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Queues one fault for the next request of any kind.
    pub fn inject_next(&self, fault: Fault) {
        self.inject(Injection {
            fault,
            target: Target::Any,
            times: 1,
        });
    }

    /// From now on the next `n` attachment answers arrive damaged (0 stops it): the body no
    /// longer matches the hash the header and the project detail announce.
    pub fn corrupt_next_attachments(&self, n: u32) {
        self.lock().corrupt_attachments = n;
    }

    /// Makes one project's detail call answer `fault` every time (`None` heals it).
    pub fn fail_project(&self, xmdm: &str, fault: Option<Fault>) {
        let mut st = self.lock();
        match fault {
            Some(f) => st.failing_projects.insert(xmdm.to_string(), f),
            None => st.failing_projects.remove(xmdm),
        };
    }

    pub fn stats(&self) -> SimStats {
        self.lock().stats.clone()
    }

    /// Changes a project now (a new version, `GXSJ` = now). Returns the new `BBH`.
    pub fn change(&self, xmdm: &str, edit: impl FnOnce(&mut Value)) -> Option<u64> {
        let now = self.now();
        self.lock().projects.change(xmdm, now, edit)
    }

    /// Withdraws a project: a new version with `ZT` = 0.
    pub fn withdraw(&self, xmdm: &str) -> Option<u64> {
        self.change(xmdm, |doc| doc["ZT"] = Value::from("0"))
    }

    /// Adds a full record version (fixtures, tests).
    pub fn insert(&self, doc: Value) -> Result<(), String> {
        self.lock().projects.insert(doc)
    }

    pub fn purge(&self, xmdm: &str) {
        self.lock().projects.purge(xmdm);
    }

    /// Every project code whose newest version is visible now with `GXSJ` in the range: what
    /// a client that missed nothing must have seen.
    pub fn visible_in(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<(String, u64)> {
        let now = self.now();
        self.lock()
            .projects
            .window(start, end, now)
            .into_iter()
            .map(|l| (l.xmdm, l.bbh))
            .collect()
    }

    /// Authentication, limits and faults, in the order a real platform applies them: the
    /// provincial gateway's faults first, then signature, timestamp, nonce, rate limit and
    /// quota. Returns the response to send instead of the call's, if any.
    async fn admit(&self, target: Target, uri: &Uri, headers: &HeaderMap) -> Result<(), Response> {
        let hook = self
            .0
            .on_request
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook(self);
        }
        let now = self.now();
        let decision = {
            let mut st = self.lock();
            st.stats.requests += 1;
            let random = (
                self.0.cfg.random_fault_per_mille,
                self.0.cfg.random_hang_per_mille,
            );
            match take_fault(&mut st, target, random) {
                Some(fault) => {
                    st.stats.faults_injected += 1;
                    if matches!(fault, Fault::Hang { .. }) {
                        st.stats.hangs += 1;
                    }
                    Err(fault)
                }
                None => {
                    if st.hanging > 0 {
                        st.stats.answered_during_hang += 1;
                    }
                    Ok(self.check(&mut st, uri, headers, now))
                }
            }
        };
        match decision {
            Ok(result) => result,
            Err(Fault::Hang { secs }) => {
                /// Counts the hang while it lasts, however the request ends (a client that
                /// gives up drops it).
                struct Hanging<'a>(&'a Simulator);
                impl Drop for Hanging<'_> {
                    fn drop(&mut self) {
                        self.0.lock().hanging -= 1;
                    }
                }
                self.lock().hanging += 1;
                let _hanging = Hanging(self);
                tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
                Err(envelope(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "5000",
                    "超时",
                    Value::Null,
                    now,
                ))
            }
            Err(fault) => Err(self.fault_response(fault, now)),
        }
    }

    fn check(
        &self,
        st: &mut SimState,
        uri: &Uri,
        headers: &HeaderMap,
        now: DateTime<Utc>,
    ) -> Result<(), Response> {
        let cfg = &self.0.cfg;
        if let Some(until) = st.maintenance_until {
            if now < until {
                return Err(maintenance(until, now));
            }
            st.maintenance_until = None;
        }
        let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let unauthorized = |st: &mut SimState, code: &str, msg: &str| {
            st.stats.auth_rejected += 1;
            let mut r = envelope(StatusCode::UNAUTHORIZED, code, msg, Value::Null, now);
            if let Ok(v) = HeaderValue::from_str(&http_date(now)) {
                r.headers_mut().insert(header::DATE, v);
            }
            r
        };
        let (Some(app_id), Some(ts), Some(nonce), Some(signature)) =
            (h("x-app-id"), h("x-timestamp"), h("x-nonce"), h("x-signature"))
        else {
            return Err(unauthorized(st, "4010", "签名校验失败：缺少签名头"));
        };
        let Some(method) = SignMethod::from_header(h("x-sign-method")) else {
            return Err(unauthorized(st, "4010", "签名校验失败：不支持的签名方法"));
        };
        if app_id != cfg.app_id {
            return Err(unauthorized(st, "4010", "签名校验失败：appId 无效"));
        }
        let pairs: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
        let canonical = canonical_query(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let sts = string_to_sign("GET", uri.path(), &canonical, app_id, ts, nonce);
        if !verify(method, cfg.app_secret.as_bytes(), &sts, signature) {
            return Err(unauthorized(st, "4010", "签名校验失败"));
        }
        let Ok(ts_ms) = ts.parse::<i64>() else {
            return Err(unauthorized(st, "4011", "时间戳无效"));
        };
        if (ts_ms - now.timestamp_millis()).abs() > 300_000 {
            return Err(unauthorized(st, "4011", "时间戳超出允许范围"));
        }
        while let Some((seen, _)) = st.nonce_order.front() {
            if now - *seen <= Duration::minutes(15) {
                break;
            }
            if let Some((_, old)) = st.nonce_order.pop_front() {
                st.nonces.remove(&old);
            }
        }
        if nonce.len() != 32 || st.nonces.contains_key(nonce) {
            return Err(unauthorized(st, "4012", "随机数重复"));
        }
        st.nonces.insert(nonce.to_string(), now);
        st.nonce_order.push_back((now, nonce.to_string()));

        if let Some(limit) = cfg.rate_limit_per_sec {
            let instant = Instant::now();
            while st
                .recent
                .front()
                .is_some_and(|t| instant.duration_since(*t) >= std::time::Duration::from_secs(1))
            {
                st.recent.pop_front();
            }
            if st.recent.len() as u32 >= limit {
                st.stats.rate_limited += 1;
                return Err(rate_limited(1, now));
            }
            st.recent.push_back(instant);
        }

        let today = now.with_timezone(&beijing()).date_naive();
        if st.quota_day != Some(today) {
            st.quota_day = Some(today);
            st.quota_used = 0;
        }
        st.quota_used += 1;
        let over = cfg.daily_quota.is_some_and(|q| st.quota_used > q);
        if over || st.exhausted_day == Some(today) {
            st.stats.quota_refused += 1;
            return Err(envelope(
                StatusCode::OK,
                "4291",
                "当日调用次数已用完",
                Value::Null,
                now,
            ));
        }
        Ok(())
    }

    fn fault_response(&self, fault: Fault, now: DateTime<Utc>) -> Response {
        let html = |status: StatusCode, title: &str| {
            let body = format!(
                "<html><head><title>{title}</title></head><body><h1>{title}</h1><hr>provincial gateway</body></html>"
            );
            (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
        };
        match fault {
            Fault::RateLimited { retry_after_secs } => rate_limited(retry_after_secs, now),
            Fault::QuotaExhausted => {
                self.lock().exhausted_day = Some(now.with_timezone(&beijing()).date_naive());
                envelope(StatusCode::OK, "4291", "当日调用次数已用完", Value::Null, now)
            }
            Fault::Maintenance { for_secs } => {
                let until = now + Duration::seconds(for_secs as i64);
                self.lock().maintenance_until = Some(until);
                maintenance(until, now)
            }
            Fault::Internal500 => envelope(
                StatusCode::INTERNAL_SERVER_ERROR,
                "5000",
                "系统内部错误",
                Value::Null,
                now,
            ),
            Fault::Internal200 => envelope(StatusCode::OK, "5000", "系统内部错误", Value::Null, now),
            Fault::UnknownCode => envelope(StatusCode::OK, "5999", "未知错误", Value::Null, now),
            Fault::BadGateway => html(StatusCode::BAD_GATEWAY, "502 Bad Gateway"),
            Fault::GatewayTimeout => html(StatusCode::GATEWAY_TIMEOUT, "504 Gateway Time-out"),
            Fault::WafPage => html(StatusCode::OK, "访问被拦截 - Web应用防火墙"),
            Fault::CutOffJson => {
                let full = envelope_bytes("0000", "成功", json!({"total": 1, "list": []}), now);
                let cut = full[..full.len() / 2].to_vec();
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
                    cut,
                )
                    .into_response()
            }
            Fault::CutOffConnection => {
                let full = envelope_bytes("0000", "成功", json!({"total": 1, "list": []}), now);
                let half = Bytes::copy_from_slice(&full[..full.len() / 2]);
                let stream = futures::stream::iter(vec![
                    Ok(half),
                    Err(std::io::Error::other("connection closed by simulator")),
                ]);
                let mut r = Response::new(Body::from_stream(stream));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json;charset=UTF-8"),
                );
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(full.len()));
                r
            }
            Fault::Reset => {
                let stream = futures::stream::iter(vec![Err::<Bytes, _>(std::io::Error::other(
                    "connection reset by simulator",
                ))]);
                Response::new(Body::from_stream(stream))
            }
            Fault::Hang { .. } => envelope(
                StatusCode::INTERNAL_SERVER_ERROR,
                "5000",
                "超时",
                Value::Null,
                now,
            ),
        }
    }
}

/// The fault the next request gets: an injected one first, else a random quick fault or hang
/// at the configured per-mille rates (`(quick, hang)`).
fn take_fault(
    st: &mut SimState,
    target: Target,
    (random_per_mille, hang_per_mille): (u64, u64),
) -> Option<Fault> {
    if let Some(pos) = st
        .faults
        .iter()
        .position(|f| f.target == Target::Any || f.target == target)
    {
        let injection = &mut st.faults[pos];
        let fault = injection.fault;
        injection.times = injection.times.saturating_sub(1);
        if injection.times == 0 {
            st.faults.remove(pos);
        }
        return Some(fault);
    }
    if random_per_mille > 0 {
        st.random = mix(st.random);
        if st.random % 1000 < random_per_mille {
            st.random = mix(st.random);
            // Faults that answer at once (no hang, no multi-second Retry-After).
            let quick: Vec<Fault> = Fault::ALL_TRANSIENT
                .into_iter()
                .filter(|f| !matches!(f, Fault::Hang { .. } | Fault::RateLimited { .. }))
                .collect();
            return Some(quick[(st.random % quick.len() as u64) as usize]);
        }
    }
    if hang_per_mille > 0 {
        st.random = mix(st.random);
        if st.random % 1000 < hang_per_mille {
            return Some(Fault::Hang { secs: 30 });
        }
    }
    None
}

fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn request_id(now: DateTime<Utc>) -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:016x}{:016x}", mix(now.timestamp_micros() as u64), mix(n))
}

fn envelope_bytes(code: &str, msg: &str, data: Value, now: DateTime<Utc>) -> Vec<u8> {
    let body = json!({"code": code, "msg": msg, "data": data, "requestId": request_id(now)});
    serde_json::to_vec(&body).unwrap_or_default()
}

fn envelope(status: StatusCode, code: &str, msg: &str, data: Value, now: DateTime<Utc>) -> Response {
    let body = envelope_bytes(code, msg, data, now);
    (
        status,
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        body,
    )
        .into_response()
}

/// HTTP 429, code `4290`, with `Retry-After` in seconds.
fn rate_limited(retry_after_secs: u64, now: DateTime<Utc>) -> Response {
    let mut r = envelope(
        StatusCode::TOO_MANY_REQUESTS,
        "4290",
        "请求过于频繁",
        Value::Null,
        now,
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    r
}

fn maintenance(until: DateTime<Utc>, now: DateTime<Utc>) -> Response {
    envelope(
        StatusCode::SERVICE_UNAVAILABLE,
        "5030",
        "系统维护中",
        json!({"resumeAt": format_beijing(until)}),
        now,
    )
}

fn bad_parameter(msg: &str, now: DateTime<Utc>) -> Response {
    envelope(StatusCode::OK, "4001", msg, Value::Null, now)
}

async fn list(State(sim): State<Simulator>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(r) = sim.admit(Target::List, &uri, &headers).await {
        return r;
    }
    let now = sim.now();
    let params: HashMap<String, String> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let (Some(start), Some(end)) = (
        params.get("gxsjStart").and_then(|s| parse_beijing(s)),
        params.get("gxsjEnd").and_then(|s| parse_beijing(s)),
    ) else {
        return bad_parameter("参数错误：gxsjStart、gxsjEnd 必须为 yyyy-MM-dd HH:mm:ss", now);
    };
    if start > end {
        return bad_parameter("参数错误：gxsjStart 晚于 gxsjEnd", now);
    }
    if end - start > Duration::hours(24) {
        return bad_parameter("查询时间跨度不能超过24小时", now);
    }
    let number = |name: &str, default: u64| -> Result<u64, ()> {
        params
            .get(name)
            .map_or(Ok(default), |v| v.parse::<u64>().map_err(|_| ()))
    };
    let (Ok(page_no), Ok(page_size)) = (number("pageNo", 1), number("pageSize", 20)) else {
        return bad_parameter("参数错误：pageNo、pageSize 必须为正整数", now);
    };
    if page_no == 0 || page_size == 0 || page_size > 100 {
        return bad_parameter("参数错误：pageSize 取值 1-100，pageNo 从 1 开始", now);
    }
    let drift_every = sim.0.cfg.drift_every;
    let mut st = sim.lock();
    st.stats.lists += 1;
    let lists = st.stats.lists;
    let window = st.projects.window(start, end, now);
    let total = window.len();
    let from = ((page_no - 1) * page_size) as usize;
    let page: Vec<_> = window.into_iter().skip(from).take(page_size as usize).collect();
    let list: Vec<Value> = page
        .iter()
        .map(|l| {
            let (name, zt) = st.projects.summary(l);
            json!({"XMDM": l.xmdm, "XMMC": name, "BBH": l.bbh, "GXSJ": format_beijing(l.gxsj), "ZT": zt})
        })
        .collect();
    if let Some(every) = drift_every
        && every > 0
        && lists % every == 0
        && let Some(first) = page.first()
    {
        // The project just served moves to "now": every later entry of this window shifts up.
        let changed = st.projects.change(&first.xmdm, now, |doc| {
            let name = doc["XMMC"].as_str().unwrap_or_default();
            let base = name.split('（').next().unwrap_or(name).to_string();
            doc["XMMC"] = Value::from(format!("{base}（变更）"));
        });
        if changed.is_some() {
            st.stats.drift_changes += 1;
        }
    }
    drop(st);
    envelope(
        StatusCode::OK,
        "0000",
        "成功",
        json!({"total": total, "pageNo": page_no, "pageSize": page_size, "list": list}),
        now,
    )
}

async fn detail(
    State(sim): State<Simulator>,
    Path(xmdm): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = sim.admit(Target::Detail, &uri, &headers).await {
        return r;
    }
    let now = sim.now();
    let failing = sim.lock().failing_projects.get(&xmdm).copied();
    if let Some(fault) = failing {
        return sim.fault_response(fault, now);
    }
    let mut st = sim.lock();
    st.stats.details += 1;
    match st.projects.detail(&xmdm, now) {
        Some(v) if Projects::in_service_area(&v.doc) => {
            drop(st);
            envelope(StatusCode::OK, "0000", "成功", v.doc, now)
        }
        Some(_) => envelope(
            StatusCode::OK,
            "4030",
            "项目不在本账号服务范围内",
            Value::Null,
            now,
        ),
        None => envelope(StatusCode::OK, "4040", "项目不存在", Value::Null, now),
    }
}

async fn inject_fault(
    State(sim): State<Simulator>,
    axum::Json(injection): axum::Json<Injection>,
) -> StatusCode {
    sim.inject(injection);
    StatusCode::NO_CONTENT
}

async fn stats(State(sim): State<Simulator>) -> axum::Json<SimStats> {
    axum::Json(sim.stats())
}

async fn attachment(
    State(sim): State<Simulator>,
    Path(fjid): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = sim.admit(Target::Attachment, &uri, &headers).await {
        return r;
    }
    use sha2::{Digest, Sha256};
    let corrupt = {
        let mut st = sim.lock();
        st.stats.attachments += 1;
        let corrupt = st.corrupt_attachments > 0;
        st.corrupt_attachments = st.corrupt_attachments.saturating_sub(1);
        corrupt
    };
    let mut content = attachment_content(&fjid);
    // `X-Content-SHA256` repeats the stored hash, not one computed while sending.
    let hash = hex::encode(Sha256::digest(&content));
    if corrupt && let Some(b) = content.last_mut() {
        *b ^= 0xFF;
    }
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/pdf".to_string()),
            (header::HeaderName::from_static("x-content-sha256"), hash),
        ],
        content,
    )
        .into_response()
}
