//! A simulator of the licence library over real HTTP: GBK or UTF-8 at random, varying
//! namespace prefixes, token expiry and revocation, every fault of the contract on demand, and
//! licences for most builders — some revoked, expired, missing, or naming another project.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use chrono::{DateTime, Duration, Utc};
use quick_xml::escape::escape;
use serde::Serialize;
use shuiwu_wire::Clock;
use tokio::net::TcpListener;

use crate::client::token_sign;
use crate::soap::{Licence, SERVICE_NS, SOAP_NS};
use crate::xml;

/// Faults the simulator injects on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LicenceFault {
    /// Every token is revoked (the platform restarted): calls answer `TOKEN_EXPIRED`.
    RevokeTokens,
    RateLimit,
    /// A SOAP fault with another faultstring.
    ServerFault,
    /// HTTP 200 with the HTML maintenance page.
    MaintenancePage,
    /// A document cut off halfway (its length announced truthfully).
    Truncated,
    /// A document that declares a DTD with an entity bomb.
    Dtd,
    /// A document over 10 MiB.
    Oversize,
    /// Result code 9999.
    Internal,
}

#[derive(Debug, Clone)]
pub struct LicenceSimConfig {
    pub app_id: String,
    pub app_secret: String,
    pub seed: u64,
    pub token_ttl_secs: i64,
    /// Per-mille of requests answered with a random transient fault (a busy server's SOAP
    /// fault, result code 9999 or a rate-limit fault), besides the injected ones.
    pub random_fault_per_mille: u64,
    /// Licences served for these holders instead of generated ones.
    pub fixtures: HashMap<String, Vec<Licence>>,
}

impl Default for LicenceSimConfig {
    fn default() -> Self {
        let mut fixtures = HashMap::new();
        // The contract's example builder, with a planning permit for its example project.
        fixtures.insert(
            "91350100M000100Y43".to_string(),
            vec![
                licence(
                    "YYZZ",
                    "营业执照",
                    "91350100M000100Y43",
                    "昆明某科技有限公司",
                    "91350100M000100Y43",
                    "1",
                    "长期",
                    None,
                ),
                licence(
                    "JSGCGHXKZ",
                    "建设工程规划许可证",
                    "530112202400123",
                    "昆明某科技有限公司",
                    "91350100M000100Y43",
                    "1",
                    "2027-02-28",
                    Some("2022-530112-47-01-587143"),
                ),
            ],
        );
        LicenceSimConfig {
            app_id: "wsgs-km-sim".into(),
            app_secret: "licence-sim-secret".into(),
            seed: 1,
            token_ttl_secs: 7200,
            random_fault_per_mille: 0,
            fixtures,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn licence(
    kind: &str,
    name: &str,
    number: &str,
    holder_name: &str,
    holder: &str,
    status: &str,
    until: &str,
    project: Option<&str>,
) -> Licence {
    Licence {
        number: number.into(),
        name: Some(name.into()),
        type_code: kind.into(),
        holder_name: Some(holder_name.into()),
        holder_code: Some(holder.into()),
        issuer: Some("昆明市自然资源和规划局".into()),
        issued_on: Some("2024-03-01".into()),
        valid_until: Some(until.into()),
        status: status.into(),
        project_code: project.map(str::to_string),
        file_sha256: Some(format!(
            "{:064x}",
            mix(number.len() as u64 ^ mix(number.bytes().map(u64::from).sum()))
        )),
    }
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A person's licences: the identity card, and for most the title to the premises (a
/// household's two items), the title sometimes revoked.
fn person_licences(holder: &str, pick: impl Fn(u64, u64) -> u64) -> Vec<Licence> {
    let name = "（模拟）申请人";
    let mut out = vec![licence(
        "SFZ",
        "居民身份证",
        holder,
        name,
        holder,
        "1",
        "2036-01-01",
        None,
    )];
    if pick(9, 100) < 80 {
        let number = format!("云(2023)昆明市不动产权第{:07}号", pick(10, 10_000_000));
        let status = if pick(11, 100) < 5 { "2" } else { "1" };
        out.push(licence(
            "BDCQZS",
            "不动产权证书",
            &number,
            name,
            holder,
            status,
            "长期",
            None,
        ));
    }
    out
}

const TYPES: [&str; 6] = ["YYZZ", "JSYDGHXKZ", "JSGCGHXKZ", "JZGCSGXKZ", "BDCQZS", "SFZ"];

/// Counters tests assert on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LicenceSimStats {
    pub requests: u64,
    pub tokens_issued: u64,
    pub token_rejections: u64,
    pub queries: u64,
    pub gbk_answers: u64,
    pub utf8_answers: u64,
    pub faults_injected: u64,
}

struct SimState {
    tokens: HashMap<String, DateTime<Utc>>,
    /// What the next requests get: a fault, or `None` for a normal answer.
    faults: VecDeque<Option<LicenceFault>>,
    counter: u64,
    /// Every request before this instant gets the maintenance page.
    maintenance_until: Option<DateTime<Utc>>,
    stats: LicenceSimStats,
}

struct Inner {
    cfg: LicenceSimConfig,
    clock: Arc<dyn Clock>,
    state: Mutex<SimState>,
}

#[derive(Clone)]
pub struct LicenceSim(Arc<Inner>);

pub struct LicenceSimServer {
    pub addr: SocketAddr,
    pub sim: LicenceSim,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LicenceSimServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LicenceSimServer {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl LicenceSim {
    pub fn new(cfg: LicenceSimConfig, clock: Arc<dyn Clock>) -> Self {
        LicenceSim(Arc::new(Inner {
            cfg,
            clock,
            state: Mutex::new(SimState {
                tokens: HashMap::new(),
                faults: VecDeque::new(),
                counter: 0,
                maintenance_until: None,
                stats: LicenceSimStats::default(),
            }),
        }))
    }

    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<LicenceSimServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let listener = listener.tap_io(|tcp| {
            // Without TCP_NODELAY kept-alive requests stall on Nagle's algorithm.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!("licence simulator: TCP_NODELAY not set: {e}");
            }
        });
        let app = Router::new()
            .route("/services/LicenceService", post(handle))
            .with_state(self.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("licence simulator stopped: {e}");
            }
        });
        Ok(LicenceSimServer {
            addr,
            sim: self,
            task,
        })
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // Plain counters and maps: consistent between statements even after a panic.
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn config(&self) -> &LicenceSimConfig {
        &self.0.cfg
    }

    pub fn inject(&self, fault: LicenceFault) {
        self.lock().faults.push_back(Some(fault));
    }

    /// Lets the next `skip` requests through, then answers the following ones with `faults`.
    pub fn inject_after(&self, skip: usize, faults: impl IntoIterator<Item = LicenceFault>) {
        let mut st = self.lock();
        st.faults.extend(std::iter::repeat_n(None, skip));
        st.faults.extend(faults.into_iter().map(Some));
    }

    pub fn stats(&self) -> LicenceSimStats {
        self.lock().stats.clone()
    }

    /// Puts the platform under maintenance (the HTML page for every request) until `until`.
    pub fn maintenance_until(&self, until: DateTime<Utc>) {
        self.lock().maintenance_until = Some(until);
    }

    /// Revokes every token at once, as a restart of the platform does.
    pub fn revoke_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// The licences the platform holds for a holder: fixtures, else generated from the code.
    pub fn licences_for(&self, holder: &str) -> Vec<Licence> {
        if let Some(l) = self.0.cfg.fixtures.get(holder) {
            return l.clone();
        }
        let h = holder
            .bytes()
            .fold(mix(self.0.cfg.seed), |acc, b| mix(acc ^ u64::from(b)));
        let pick = |salt: u64, n: u64| mix(h ^ salt) % n;
        if pick(1, 100) < 6 {
            return Vec::new();
        }
        if shuiwu_wire::ids::validate_id_card(holder).is_ok() {
            return person_licences(holder, pick);
        }
        let name = "（模拟）建设单位";
        let mut out = Vec::new();
        let (status, until) = match pick(2, 100) {
            0..=6 => ("2", "长期"),
            7..=13 => ("3", "2024-12-31"),
            _ => ("1", "长期"),
        };
        out.push(licence(
            "YYZZ",
            "营业执照",
            holder,
            name,
            holder,
            status,
            until,
            None,
        ));
        if pick(3, 100) < 85 {
            let (status, until) = match pick(4, 100) {
                0..=5 => ("2", "2030-12-31"),
                6..=11 => ("1", "2025-06-30"),
                _ => ("1", "2030-12-31"),
            };
            let project = (pick(5, 100) < 10).then_some("2020-530100-00-00-999999");
            let number = format!("5301{:011}", pick(6, 100_000_000_000));
            out.push(licence(
                "JSGCGHXKZ",
                "建设工程规划许可证",
                &number,
                name,
                holder,
                status,
                until,
                project,
            ));
        }
        if pick(7, 100) < 30 {
            let number = format!("云(2024)昆明市不动产权第{:07}号", pick(8, 10_000_000));
            out.push(licence(
                "BDCQZS",
                "不动产权证书",
                &number,
                name,
                holder,
                "1",
                "长期",
                None,
            ));
        }
        out
    }
}

async fn handle(State(sim): State<LicenceSim>, headers: HeaderMap, body: Bytes) -> Response {
    let now = sim.0.clock.now();
    let action = headers
        .get("soapaction")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim_matches('"')
        .to_string();
    let (fault, n) = {
        let mut st = sim.lock();
        st.stats.requests += 1;
        st.counter += 1;
        let mut fault = st.faults.pop_front().flatten();
        if fault.is_none() && st.maintenance_until.is_some_and(|until| now < until) {
            fault = Some(LicenceFault::MaintenancePage);
        }
        let per_mille = sim.0.cfg.random_fault_per_mille;
        if fault.is_none() && per_mille > 0 {
            let draw = mix(st.counter ^ sim.0.cfg.seed.rotate_left(17));
            if draw % 1000 < per_mille {
                let quick = [
                    LicenceFault::ServerFault,
                    LicenceFault::Internal,
                    LicenceFault::RateLimit,
                ];
                fault = Some(quick[(mix(draw) % 3) as usize]);
            }
        }
        if fault.is_some() {
            st.stats.faults_injected += 1;
        }
        if fault == Some(LicenceFault::RevokeTokens) {
            st.tokens.clear();
        }
        (fault, mix(st.counter ^ sim.0.cfg.seed))
    };
    let style = Style::pick(n);
    match fault {
        Some(LicenceFault::RateLimit) => return soap_fault(&style, "RATE_LIMIT", &sim),
        Some(LicenceFault::ServerFault) => return soap_fault(&style, "Server.Busy", &sim),
        Some(LicenceFault::MaintenancePage) => {
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
                "<!DOCTYPE html><html><body><h1>系统维护中</h1></body></html>",
            )
                .into_response();
        }
        Some(LicenceFault::Dtd) => {
            let bomb = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">]><lolz>&lol1;</lolz>";
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/xml; charset=UTF-8")],
                bomb,
            )
                .into_response();
        }
        Some(LicenceFault::Oversize) => {
            let mut big = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><a>".to_vec();
            big.resize(xml::MAX_DOCUMENT_BYTES + 1024, b' ');
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/xml; charset=UTF-8")],
                big,
            )
                .into_response();
        }
        _ => {}
    }
    let request = match std::str::from_utf8(&body)
        .map_err(|e| e.to_string())
        .and_then(|t| xml::parse(t).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => return soap_fault(&style, &format!("Client.BadRequest: {e}"), &sim),
    };
    let payload = request
        .child(SOAP_NS, "Body")
        .and_then(|b| b.children.first())
        .cloned()
        .unwrap_or_default();
    let answer = match action.as_str() {
        "GetToken" => get_token(&sim, &payload, now),
        "QueryLicence" => {
            if let Some(f) = check_token(&sim, &request, now) {
                return soap_fault(&style, f, &sim);
            }
            let internal = fault == Some(LicenceFault::Internal);
            query(&sim, &payload, internal)
        }
        other => return soap_fault(&style, &format!("Client.UnknownAction: {other}"), &sim),
    };
    let mut doc = render(&style, &answer);
    if fault == Some(LicenceFault::Truncated) {
        doc.truncate(doc.len() / 2);
    }
    encode(&style, doc, &sim)
}

fn get_token(sim: &LicenceSim, payload: &xml::Element, now: DateTime<Utc>) -> Answer {
    let cfg = &sim.0.cfg;
    let app = payload.child_text(SERVICE_NS, "AppId").unwrap_or_default();
    let ts = payload.child_text(SERVICE_NS, "Timestamp").unwrap_or_default();
    let sign = payload.child_text(SERVICE_NS, "Sign").unwrap_or_default();
    let expected = token_sign(&cfg.app_secret, &cfg.app_id, &ts);
    // Compare as MACs do: the verdict must not depend on how many characters matched.
    let same = sign.len() == expected.len()
        && sign
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if app != cfg.app_id || ts.is_empty() || !same {
        return Answer::TokenRefused;
    }
    let mut st = sim.lock();
    st.counter += 1;
    let token = format!(
        "{:016x}{:016x}",
        mix(st.counter),
        mix(now.timestamp_micros() as u64)
    );
    st.tokens
        .insert(token.clone(), now + Duration::seconds(cfg.token_ttl_secs));
    st.stats.tokens_issued += 1;
    Answer::Token(token, cfg.token_ttl_secs)
}

fn check_token(sim: &LicenceSim, request: &xml::Element, now: DateTime<Utc>) -> Option<&'static str> {
    let auth = request
        .child(SOAP_NS, "Header")
        .and_then(|h| h.child(SERVICE_NS, "Auth"));
    let app = auth
        .and_then(|a| a.child_text(SERVICE_NS, "AppId"))
        .unwrap_or_default();
    let token = auth
        .and_then(|a| a.child_text(SERVICE_NS, "Token"))
        .unwrap_or_default();
    let mut st = sim.lock();
    let valid = app == sim.0.cfg.app_id && st.tokens.get(&token).is_some_and(|exp| *exp > now);
    if valid {
        None
    } else {
        st.stats.token_rejections += 1;
        Some("TOKEN_EXPIRED")
    }
}

fn query(sim: &LicenceSim, payload: &xml::Element, internal: bool) -> Answer {
    sim.lock().stats.queries += 1;
    if internal {
        return Answer::Result("9999", "系统内部错误");
    }
    let holder = payload.child_text(SERVICE_NS, "HolderCode").unwrap_or_default();
    let kind = payload.child_text(SERVICE_NS, "LicenceType");
    if holder.is_empty() || kind.as_deref().is_some_and(|k| !TYPES.contains(&k)) {
        return Answer::Result("1002", "参数错误");
    }
    let all = sim.licences_for(&holder);
    if all.is_empty() {
        return Answer::Result("1001", "持证主体不存在");
    }
    Answer::Licences(
        all.into_iter()
            .filter(|l| kind.as_deref().is_none_or(|k| l.type_code == k))
            .collect(),
    )
}

enum Answer {
    Token(String, i64),
    TokenRefused,
    Licences(Vec<Licence>),
    Result(&'static str, &'static str),
}

/// How one answer is written: charset and prefixes vary, as the platform's do.
struct Style {
    gbk: bool,
    envelope_prefix: &'static str,
    /// 0: `lic:` declared on the Envelope; 1: `ns2:` on the response element; 2: default namespace.
    service: u64,
}

impl Style {
    fn pick(n: u64) -> Style {
        Style {
            gbk: n.is_multiple_of(2),
            envelope_prefix: ["soap", "SOAP-ENV", "S", "soapenv"][((n >> 8) % 4) as usize],
            service: (n >> 16) % 3,
        }
    }

    fn charset(&self) -> &'static str {
        if self.gbk { "GBK" } else { "UTF-8" }
    }
}

fn render(style: &Style, answer: &Answer) -> String {
    let e = style.envelope_prefix;
    let (p, decl_env, decl_el) = match style.service {
        0 => ("lic:", format!(" xmlns:lic=\"{SERVICE_NS}\""), String::new()),
        1 => ("ns2:", String::new(), format!(" xmlns:ns2=\"{SERVICE_NS}\"")),
        _ => ("", String::new(), format!(" xmlns=\"{SERVICE_NS}\"")),
    };
    let result = |code: &str, msg: &str| {
        format!("<{p}Result><{p}Code>{code}</{p}Code><{p}Message>{msg}</{p}Message></{p}Result>")
    };
    let inner = match answer {
        Answer::Token(token, ttl) => format!(
            "<{p}GetTokenResponse{decl_el}>{}<{p}Token>{token}</{p}Token><{p}ExpiresIn>{ttl}</{p}ExpiresIn></{p}GetTokenResponse>",
            result("0", "成功")
        ),
        Answer::TokenRefused => format!(
            "<{p}GetTokenResponse{decl_el}>{}</{p}GetTokenResponse>",
            result("1003", "认证失败")
        ),
        Answer::Result(code, msg) => format!(
            "<{p}QueryLicenceResponse{decl_el}>{}</{p}QueryLicenceResponse>",
            result(code, msg)
        ),
        Answer::Licences(list) => {
            let mut items = String::new();
            for l in list {
                items.push_str(&format!("<{p}Licence>"));
                let mut field = |name: &str, value: Option<&str>| {
                    if let Some(v) = value {
                        items.push_str(&format!("<{p}{name}>{}</{p}{name}>", escape(v)));
                    }
                };
                field("ZZBH", Some(&l.number));
                field("ZZMC", l.name.as_deref());
                field("ZZLXDM", Some(&l.type_code));
                field("CZZTMC", l.holder_name.as_deref());
                field("CZZTDM", l.holder_code.as_deref());
                field("FZJGMC", l.issuer.as_deref());
                field("FZRQ", l.issued_on.as_deref());
                field("YXQZ", l.valid_until.as_deref());
                field("ZZZT", Some(&l.status));
                field("XMDM", l.project_code.as_deref());
                field("WJHX", l.file_sha256.as_deref());
                items.push_str(&format!("</{p}Licence>"));
            }
            let list = if list.is_empty() {
                format!("<{p}Licences/>")
            } else {
                format!("<{p}Licences>{items}</{p}Licences>")
            };
            format!(
                "<{p}QueryLicenceResponse{decl_el}>{}{list}</{p}QueryLicenceResponse>",
                result("0", "成功")
            )
        }
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"{}\"?><{e}:Envelope xmlns:{e}=\"{SOAP_NS}\"{decl_env}><{e}:Body>{inner}</{e}:Body></{e}:Envelope>",
        style.charset()
    )
}

fn encode(style: &Style, doc: String, sim: &LicenceSim) -> Response {
    let bytes = if style.gbk {
        sim.lock().stats.gbk_answers += 1;
        encoding_rs::GBK.encode(&doc).0.into_owned()
    } else {
        sim.lock().stats.utf8_answers += 1;
        doc.into_bytes()
    };
    let content_type = format!("text/xml; charset={}", style.charset());
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], bytes).into_response()
}

fn soap_fault(style: &Style, string: &str, sim: &LicenceSim) -> Response {
    let e = style.envelope_prefix;
    let doc = format!(
        "<?xml version=\"1.0\" encoding=\"{}\"?><{e}:Envelope xmlns:{e}=\"{SOAP_NS}\"><{e}:Body><{e}:Fault><faultcode>{e}:Client</faultcode><faultstring>{}</faultstring></{e}:Fault></{e}:Body></{e}:Envelope>",
        style.charset(),
        escape(string)
    );
    let mut r = encode(style, doc, sim);
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r
}
