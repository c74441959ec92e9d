//! The service's SOAP 1.1 messages: requests we send, answers and faults we read.

use quick_xml::escape::escape;
use serde::Serialize;

use crate::error::LicenceError;
use crate::xml::Element;

pub const SOAP_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const SERVICE_NS: &str = "http://zwfw.yn.gov.cn/licence/v1";

fn envelope(header: &str, body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <soap:Envelope xmlns:soap=\"{SOAP_NS}\" xmlns:lic=\"{SERVICE_NS}\">{header}<soap:Body>{body}</soap:Body></soap:Envelope>"
    )
}

pub fn get_token(app_id: &str, timestamp_ms: &str, sign: &str) -> String {
    envelope(
        "",
        &format!(
            "<lic:GetToken><lic:AppId>{}</lic:AppId><lic:Timestamp>{}</lic:Timestamp><lic:Sign>{}</lic:Sign></lic:GetToken>",
            escape(app_id),
            escape(timestamp_ms),
            escape(sign)
        ),
    )
}

pub fn query_licence(app_id: &str, token: &str, holder: &str, licence_type: Option<&str>) -> String {
    let header = format!(
        "<soap:Header><lic:Auth><lic:AppId>{}</lic:AppId><lic:Token>{}</lic:Token></lic:Auth></soap:Header>",
        escape(app_id),
        escape(token)
    );
    let kind = licence_type.map_or(String::new(), |t| {
        format!("<lic:LicenceType>{}</lic:LicenceType>", escape(t))
    });
    envelope(
        &header,
        &format!(
            "<lic:QueryLicence><lic:HolderCode>{}</lic:HolderCode>{kind}</lic:QueryLicence>",
            escape(holder)
        ),
    )
}

/// One licence, as the platform describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Licence {
    pub number: String,
    pub name: Option<String>,
    pub type_code: String,
    pub holder_name: Option<String>,
    pub holder_code: Option<String>,
    pub issuer: Option<String>,
    pub issued_on: Option<String>,
    /// `yyyy-MM-dd`, or `长期` (no expiry).
    pub valid_until: Option<String>,
    /// `1` valid, `2` revoked, `3` expired.
    pub status: String,
    pub project_code: Option<String>,
    pub file_sha256: Option<String>,
}

impl Licence {
    fn from_element(e: &Element) -> Result<Licence, LicenceError> {
        let t = |name: &str| e.child_text(SERVICE_NS, name);
        let need =
            |name: &str| t(name).ok_or_else(|| LicenceError::BadBody(format!("a Licence without {name}")));
        Ok(Licence {
            number: need("ZZBH")?,
            name: t("ZZMC"),
            type_code: need("ZZLXDM")?,
            holder_name: t("CZZTMC"),
            holder_code: t("CZZTDM"),
            issuer: t("FZJGMC"),
            issued_on: t("FZRQ"),
            valid_until: t("YXQZ"),
            status: need("ZZZT")?,
            project_code: t("XMDM"),
            file_sha256: t("WJHX"),
        })
    }
}

/// What an answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Token { token: String, expires_in_secs: u64 },
    Licences(Vec<Licence>),
}

/// Reads a parsed response envelope: a token, licences, or the error it carries.
pub fn interpret(root: &Element) -> Result<Reply, LicenceError> {
    if !root.is(SOAP_NS, "Envelope") {
        return Err(LicenceError::BadBody(format!(
            "root element is {} in {:?}, not a SOAP envelope",
            root.local, root.ns
        )));
    }
    let body = root
        .child(SOAP_NS, "Body")
        .ok_or_else(|| LicenceError::BadBody("envelope without a Body".into()))?;
    let payload = body
        .children
        .first()
        .ok_or_else(|| LicenceError::BadBody("empty SOAP Body".into()))?;
    if payload.is(SOAP_NS, "Fault") {
        // faultcode and faultstring are unqualified in SOAP 1.1.
        let string = payload
            .children
            .iter()
            .find(|c| c.local == "faultstring")
            .map(|c| c.text.trim().to_string())
            .unwrap_or_default();
        return Err(match string.as_str() {
            "TOKEN_EXPIRED" => LicenceError::TokenExpired,
            "RATE_LIMIT" => LicenceError::RateLimited,
            other => LicenceError::Fault(other.to_string()),
        });
    }
    if payload.ns.as_deref() != Some(SERVICE_NS) {
        return Err(LicenceError::BadBody(format!(
            "unexpected answer element {}",
            payload.local
        )));
    }
    let result = payload.child(SERVICE_NS, "Result");
    let code = result
        .and_then(|r| r.child_text(SERVICE_NS, "Code"))
        .unwrap_or_default();
    let message = result
        .and_then(|r| r.child_text(SERVICE_NS, "Message"))
        .unwrap_or_default();
    match (payload.local.as_str(), code.as_str()) {
        ("GetTokenResponse", "0") => {
            let token = payload
                .child_text(SERVICE_NS, "Token")
                .ok_or_else(|| LicenceError::BadBody("GetTokenResponse without a Token".into()))?;
            let expires_in_secs = payload
                .child_text(SERVICE_NS, "ExpiresIn")
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    LicenceError::BadBody("GetTokenResponse without a numeric ExpiresIn".into())
                })?;
            Ok(Reply::Token {
                token,
                expires_in_secs,
            })
        }
        ("QueryLicenceResponse", "0") => {
            let licences = payload
                .child(SERVICE_NS, "Licences")
                .map(|l| {
                    l.children_named(SERVICE_NS, "Licence")
                        .map(Licence::from_element)
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?
                .unwrap_or_default();
            Ok(Reply::Licences(licences))
        }
        // The holder has no licence at all: an answer, not an error.
        ("QueryLicenceResponse", "1001") => Ok(Reply::Licences(Vec::new())),
        (_, "1002") => Err(LicenceError::BadParameter(message)),
        (_, "1003") => Err(LicenceError::AuthFailed(message)),
        (_, "9999") => Err(LicenceError::Internal(message)),
        (what, code) => Err(LicenceError::BadBody(format!(
            "{what} with result code {code:?}: {message}"
        ))),
    }
}
