//! Every way a licence call can fail, classified per the contract.

use shuiwu_wire::FaultClass;

use crate::xml::XmlError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenceError {
    #[error("token expired or revoked (TOKEN_EXPIRED)")]
    TokenExpired,
    #[error("rate limit (RATE_LIMIT fault)")]
    RateLimited,
    #[error("SOAP fault: {0}")]
    Fault(String),
    #[error("authentication failed (1003): {0}; check AppId and appSecret")]
    AuthFailed(String),
    #[error("bad parameter (1002): {0}")]
    BadParameter(String),
    #[error("platform internal error (9999): {0}")]
    Internal(String),
    #[error("the platform is under maintenance (HTML page)")]
    Maintenance,
    #[error("unusable document: {0}")]
    Xml(#[from] XmlError),
    #[error("unusable answer: {0}")]
    BadBody(String),
    #[error("transport failure: {0}")]
    Transport(String),
}

impl LicenceError {
    pub fn class(&self) -> FaultClass {
        match self {
            LicenceError::AuthFailed(_) | LicenceError::BadParameter(_) => FaultClass::Permanent,
            // A document refused for what it is (unsafe or oversized) would be refused again:
            // asking once more only spends the holder's share of the rate limit.
            LicenceError::Xml(
                XmlError::Dtd | XmlError::Entity(_) | XmlError::TooLarge(_) | XmlError::TooDeep,
            ) => FaultClass::Permanent,
            _ => FaultClass::Transient,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class() == FaultClass::Transient
    }
}
