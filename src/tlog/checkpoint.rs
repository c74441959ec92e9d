//! Signed checkpoints: the log's origin, size and root hash as a C2SP `tlog-checkpoint`, signed
//! as a C2SP signed note, so that any tool that reads those formats can check them, and an
//! auditor holding only the public key can tell whether a checkpoint is the gateway's.
//!
//! ```text
//! kmsw.example/shuiwu-gateway
//! 1843
//! 3kUa8C…base64 root…=
//! hash sha256
//!
//! — kmsw.example/shuiwu-gateway Ab3D…base64(key ID || signature)…
//! ```
//!
//! The fourth line (an extension line of the checkpoint format) names the tree hash, so that a
//! checkpoint says how it was computed. Ed25519 signatures are the signed-note type `0x01`.
//! SM2 (GM/T 0003, with SM3) has no type byte of its own: it is type `0xff` followed by the
//! identifier `sm2-sm3`, as the signed-note format reserves for algorithms it does not
//! assign; the signature is the 64-byte `r || s`, with the default distinguishing identifier.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::Digest as _;

use super::tree::{Hash, TreeHash};

/// The SM2 distinguishing identifier: the default of GM/T 0009.
const SM2_DIST_ID: &str = "1234567812345678";

/// The signature algorithms a checkpoint can be signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Ed25519,
    Sm2,
}

impl Algorithm {
    /// The tree hash that goes with the algorithm: SM3 with SM2, so that a log kept under the
    /// national algorithms uses them throughout; SHA-256 with Ed25519, as RFC 9162.
    pub fn tree_hash(self) -> TreeHash {
        match self {
            Algorithm::Ed25519 => TreeHash::Sha256,
            Algorithm::Sm2 => TreeHash::Sm3,
        }
    }

    /// The signed-note signature type: its byte, and for SM2 the identifier after `0xff`.
    fn type_bytes(self) -> &'static [u8] {
        match self {
            Algorithm::Ed25519 => &[0x01],
            Algorithm::Sm2 => b"\xffsm2-sm3",
        }
    }
}

/// What a checkpoint says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub hash: TreeHash,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("not a signed checkpoint: {0}")]
    Malformed(String),
    #[error("no signature by {0} on the checkpoint")]
    Unsigned(String),
    #[error("the signature by {0} does not verify: the checkpoint was altered or not signed by that key")]
    BadSignature(String),
    #[error("not a key: {0}")]
    BadKey(String),
}

impl Checkpoint {
    /// The checkpoint's text, the part that is signed.
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\nhash {}\n",
            self.origin,
            self.size,
            B64.encode(self.root),
            self.hash.name()
        )
    }

    fn parse_text(text: &str) -> Result<Checkpoint, CheckpointError> {
        let bad = |why: &str| CheckpointError::Malformed(why.to_string());
        let mut lines = text.lines();
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| bad("no origin line"))?;
        let size = lines
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("the second line is not a tree size"))?;
        let root: Hash = lines
            .next()
            .and_then(|r| B64.decode(r).ok())
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad("the third line is not a base64 32-byte root hash"))?;
        let hash = match lines.next() {
            Some("hash sha256") => TreeHash::Sha256,
            Some("hash sm3") => TreeHash::Sm3,
            _ => {
                return Err(bad(
                    "the fourth line does not name the tree hash (hash sha256 | hash sm3)",
                ));
            }
        };
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            hash,
        })
    }
}

/// A key that signs checkpoints, with the name its signatures carry (the log's origin).
pub struct Signer {
    name: String,
    key: SigningKey,
}

enum SigningKey {
    Ed25519(Box<ed25519_dalek::SigningKey>),
    Sm2(Box<sm2::dsa::SigningKey>),
}

/// The public half of a [`Signer`], as an auditor holds it: `name+keyid+base64(type||key)`,
/// the signed-note verifier key text.
#[derive(Debug, Clone)]
pub struct Verifier {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

#[derive(Debug, Clone)]
enum VerifyingKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    Sm2(Box<sm2::dsa::VerifyingKey>),
}

/// `name+keyid+base64(type || key)`, the body of both key texts: the name, the key ID as
/// written, the algorithm its type says and the key's bytes.
fn key_parts(text: &str) -> Result<(&str, &str, Algorithm, Vec<u8>), &'static str> {
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("not name+keyid+key");
    };
    let key = B64.decode(key).map_err(|_| "the key is not base64")?;
    for algorithm in [Algorithm::Sm2, Algorithm::Ed25519] {
        if let Some(rest) = key.strip_prefix(algorithm.type_bytes()) {
            return Ok((name, id, algorithm, rest.to_vec()));
        }
    }
    Err("neither an Ed25519 nor an SM2 key")
}

fn key_id(name: &str, algorithm: Algorithm, public: &[u8]) -> [u8; 4] {
    let mut h = sha2::Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update(algorithm.type_bytes());
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

impl Signer {
    /// A signer from a 32-byte secret (the Ed25519 seed, or the SM2 private scalar).
    pub fn from_secret(
        name: &str,
        algorithm: Algorithm,
        secret: &[u8; 32],
    ) -> Result<Signer, CheckpointError> {
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '+') {
            return Err(CheckpointError::BadKey(format!(
                "{name:?}: a key name is not empty and has no spaces or '+'"
            )));
        }
        let key = match algorithm {
            Algorithm::Ed25519 => {
                SigningKey::Ed25519(Box::new(ed25519_dalek::SigningKey::from_bytes(secret)))
            }
            Algorithm::Sm2 => SigningKey::Sm2(Box::new(
                sm2::dsa::SigningKey::from_slice(SM2_DIST_ID, secret)
                    .map_err(|_| CheckpointError::BadKey("not an SM2 private key (0 < d < n - 1)".into()))?,
            )),
        };
        Ok(Signer {
            name: name.to_string(),
            key,
        })
    }

    /// A new key with a random secret from the operating system's generator.
    pub fn generate(name: &str, algorithm: Algorithm) -> Result<Signer, CheckpointError> {
        // An SM2 scalar of zero or ≥ n − 1 is refused; 32 random bytes are one with
        // probability about 2^-32, so a second draw settles it in practice.
        let mut last = None;
        for _ in 0..8 {
            match Signer::from_secret(name, algorithm, &rand::random::<[u8; 32]>()) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| CheckpointError::BadKey("no key could be drawn".into())))
    }

    /// The private key text, in the form of the signed-note signer keys:
    /// `PRIVATE+KEY+name+keyid+base64(type || secret)`. Kept in a file only the gateway's user
    /// reads, or in `GATEWAY_AUDIT_KEY`.
    pub fn private_text(&self) -> String {
        let secret: Vec<u8> = match &self.key {
            SigningKey::Ed25519(k) => k.to_bytes().to_vec(),
            SigningKey::Sm2(k) => k.to_bytes().to_vec(),
        };
        let mut key = self.algorithm().type_bytes().to_vec();
        key.extend(secret);
        format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex::encode(self.verifier().id),
            B64.encode(key)
        )
    }

    /// Reads [`Signer::private_text`]'s form; the key ID must match the key.
    pub fn from_private_text(text: &str) -> Result<Signer, CheckpointError> {
        // The message never quotes the text: it holds the secret.
        let bad = |why: &str| CheckpointError::BadKey(format!("private key: {why}"));
        let rest = text
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| bad("does not start with PRIVATE+KEY+"))?;
        let (name, id, algorithm, secret) = key_parts(rest).map_err(bad)?;
        let secret: &[u8; 32] = secret
            .as_slice()
            .try_into()
            .map_err(|_| bad("the secret is not 32 bytes"))?;
        let signer = Signer::from_secret(name, algorithm, secret)?;
        if hex::encode(signer.verifier().id) != id.to_ascii_lowercase() {
            return Err(bad("the key ID does not match the key"));
        }
        Ok(signer)
    }

    /// The name signatures carry: the log's origin.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.key {
            SigningKey::Ed25519(_) => Algorithm::Ed25519,
            SigningKey::Sm2(_) => Algorithm::Sm2,
        }
    }

    pub fn verifier(&self) -> Verifier {
        let key = match &self.key {
            SigningKey::Ed25519(k) => VerifyingKey::Ed25519(k.verifying_key()),
            SigningKey::Sm2(k) => VerifyingKey::Sm2(Box::new(k.verifying_key().clone())),
        };
        let public = key.bytes();
        Verifier {
            id: key_id(&self.name, self.algorithm(), &public),
            name: self.name.clone(),
            key,
        }
    }

    /// The signed note of `checkpoint`.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        self.sign_note(&checkpoint.text())
    }

    /// The signed note of any text (lines, each ending in a newline, none of them empty): an
    /// evidence package is one, so that a change to any of its bytes is found.
    pub fn sign_note(&self, text: &str) -> String {
        let signature: Vec<u8> = match &self.key {
            SigningKey::Ed25519(k) => {
                use ed25519_dalek::Signer as _;
                k.sign(text.as_bytes()).to_bytes().to_vec()
            }
            SigningKey::Sm2(k) => {
                use sm2::dsa::signature::Signer as _;
                let s: sm2::dsa::Signature = k.sign(text.as_bytes());
                s.to_bytes().to_vec()
            }
        };
        let id = self.verifier().id;
        let mut bytes = id.to_vec();
        bytes.extend(signature);
        format!("{text}\n— {} {}\n", self.name, B64.encode(bytes))
    }
}

impl VerifyingKey {
    fn bytes(&self) -> Vec<u8> {
        match self {
            VerifyingKey::Ed25519(k) => k.to_bytes().to_vec(),
            VerifyingKey::Sm2(k) => k.to_sec1_bytes().to_vec(),
        }
    }
}

impl Verifier {
    /// The verifier key text: `name+hex key ID+base64(type || public key)`.
    pub fn to_text(&self) -> String {
        let algorithm = match self.key {
            VerifyingKey::Ed25519(_) => Algorithm::Ed25519,
            VerifyingKey::Sm2(_) => Algorithm::Sm2,
        };
        let mut key = algorithm.type_bytes().to_vec();
        key.extend(self.key.bytes());
        format!("{}+{}+{}", self.name, hex::encode(self.id), B64.encode(key))
    }

    pub fn parse(text: &str) -> Result<Verifier, CheckpointError> {
        let bad = |why: &str| CheckpointError::BadKey(format!("{text:?}: {why}"));
        let (name, id, algorithm, public) = key_parts(text.trim()).map_err(bad)?;
        let public = public.as_slice();
        let key = match algorithm {
            Algorithm::Ed25519 => VerifyingKey::Ed25519(
                public
                    .try_into()
                    .ok()
                    .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
                    .ok_or_else(|| bad("not an Ed25519 public key"))?,
            ),
            Algorithm::Sm2 => VerifyingKey::Sm2(Box::new(
                sm2::dsa::VerifyingKey::from_sec1_bytes(SM2_DIST_ID, public)
                    .map_err(|_| bad("not an SM2 public key"))?,
            )),
        };
        let computed = key_id(name, algorithm, public);
        if hex::encode(computed) != id.to_ascii_lowercase() {
            return Err(bad("the key ID does not match the key"));
        }
        Ok(Verifier {
            name: name.to_string(),
            id: computed,
            key,
        })
    }

    /// The checkpoint of a signed note, when this key signed it.
    pub fn open(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        Checkpoint::parse_text(&self.open_note(note)?)
    }

    /// The text of a signed note, when this key signed it.
    pub fn open_note(&self, note: &str) -> Result<String, CheckpointError> {
        let bad = |why: &str| CheckpointError::Malformed(why.to_string());
        let (text, signatures) = note
            .split_once("\n\n")
            .ok_or_else(|| bad("no blank line before the signatures"))?;
        let text = format!("{text}\n");
        let prefix = format!("— {} ", self.name);
        let mut found = false;
        for line in signatures.lines() {
            let Some(sig) = line.strip_prefix(&prefix) else {
                continue;
            };
            let Ok(sig) = B64.decode(sig) else { continue };
            if sig.len() < 4 || sig[..4] != self.id {
                continue;
            }
            found = true;
            let ok = match &self.key {
                VerifyingKey::Ed25519(k) => ed25519_dalek::Signature::from_slice(&sig[4..])
                    .map(|s| k.verify_strict(text.as_bytes(), &s).is_ok())
                    .unwrap_or(false),
                VerifyingKey::Sm2(k) => {
                    use sm2::dsa::signature::Verifier as _;
                    sm2::dsa::Signature::from_slice(&sig[4..])
                        .map(|s| k.verify(text.as_bytes(), &s).is_ok())
                        .unwrap_or(false)
                }
            };
            if !ok {
                return Err(CheckpointError::BadSignature(self.name.clone()));
            }
        }
        if !found {
            return Err(CheckpointError::Unsigned(self.name.clone()));
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(hash: TreeHash) -> Checkpoint {
        Checkpoint {
            origin: "kmsw.example/shuiwu-gateway".into(),
            size: 1843,
            root: hash.leaf(b"root"),
            hash,
        }
    }

    #[test]
    fn a_private_key_text_gives_back_the_same_key_and_never_quotes_the_secret() {
        for algorithm in [Algorithm::Ed25519, Algorithm::Sm2] {
            let signer = Signer::generate("kmsw.example/shuiwu-gateway", algorithm).unwrap();
            let text = signer.private_text();
            assert!(
                text.starts_with("PRIVATE+KEY+kmsw.example/shuiwu-gateway+"),
                "{text}"
            );
            let again = Signer::from_private_text(&text).unwrap();
            assert_eq!(again.verifier().to_text(), signer.verifier().to_text());
            let c = checkpoint(algorithm.tree_hash());
            assert_eq!(signer.verifier().open(&again.sign(&c)), Ok(c));
            // A changed key ID is refused, and the message does not carry the key.
            // (Base64 may hold '+': the key is everything after the fourth.)
            let parts: Vec<&str> = text.splitn(5, '+').collect();
            let key = parts[4];
            let wrong_id = format!("PRIVATE+KEY+{}+00000000+{key}", parts[2]);
            let err = Signer::from_private_text(&wrong_id).err().unwrap().to_string();
            assert!(err.contains("key ID") && !err.contains(key), "{err}");
        }
    }

    #[test]
    fn signed_notes_verify_and_name_what_is_wrong() {
        for (algorithm, hash) in [
            (Algorithm::Ed25519, TreeHash::Sha256),
            (Algorithm::Sm2, TreeHash::Sm3),
        ] {
            let signer = Signer::from_secret("kmsw.example/shuiwu-gateway", algorithm, &[7; 32]).unwrap();
            let verifier = Verifier::parse(&signer.verifier().to_text()).unwrap();
            let c = checkpoint(hash);
            let note = signer.sign(&c);
            assert!(note.starts_with(&c.text()), "{note}");
            assert!(note.contains("\n\n— kmsw.example/shuiwu-gateway "), "{note}");
            assert_eq!(verifier.open(&note), Ok(c.clone()), "{algorithm:?}");

            // The size changed: the signature no longer verifies.
            let edited = note.replacen("\n1843\n", "\n1842\n", 1);
            assert_eq!(
                verifier.open(&edited),
                Err(CheckpointError::BadSignature(
                    "kmsw.example/shuiwu-gateway".into()
                ))
            );
            // Signed by another key of the same name: not this key's checkpoint.
            let other = Signer::from_secret("kmsw.example/shuiwu-gateway", algorithm, &[8; 32]).unwrap();
            assert_eq!(
                verifier.open(&other.sign(&c)),
                Err(CheckpointError::Unsigned("kmsw.example/shuiwu-gateway".into()))
            );
            assert!(matches!(
                verifier.open(&c.text()),
                Err(CheckpointError::Malformed(_))
            ));
        }
    }

    #[test]
    fn ed25519_key_ids_are_those_of_the_signed_note_format() {
        // SHA-256(name || 0x0A || 0x01 || public key)[:4], recomputed here by hand.
        let signer = Signer::from_secret("example.com/log", Algorithm::Ed25519, &[1; 32]).unwrap();
        let text = signer.verifier().to_text();
        let mut parts = text.split('+');
        let (name, id, key) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let key = B64.decode(key).unwrap();
        assert_eq!((name, key[0], key.len()), ("example.com/log", 0x01, 33));
        let mut h = sha2::Sha256::new();
        h.update(b"example.com/log\n");
        h.update(&key);
        assert_eq!(id, hex::encode(&h.finalize()[..4]));
        assert!(Verifier::parse(&text.replacen(id, "00000000", 1)).is_err());
        assert!(Signer::from_secret("has space", Algorithm::Ed25519, &[1; 32]).is_err());
    }
}
