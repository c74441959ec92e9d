//! The Merkle tree of RFC 9162 §2.1 over a log's entries, kept as the hashes of its complete
//! subtrees so that an append, a root, an inclusion proof and a consistency proof each read a
//! logarithmic number of stored hashes, whatever the log's size (the layout of Go's
//! `golang.org/x/mod/sumdb/tlog`): node `(level, index)` is the hash of leaves
//! `index·2^level .. (index+1)·2^level`. Level 0 holds the leaf hashes.
//!
//! Proofs are produced here, from stored hashes; they are verified elsewhere with `ct-merkle`,
//! an independent implementation, so that the gateway's own code does not vouch for itself.

use sha2::Digest as _;

/// A tree hash: SHA-256, or SM3 where the national algorithms are required (GB/T 39786).
pub type Hash = [u8; 32];

/// Which hash function the tree uses; recorded in every checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TreeHash {
    Sha256,
    Sm3,
}

impl TreeHash {
    fn digest(self, parts: &[&[u8]]) -> Hash {
        match self {
            TreeHash::Sha256 => {
                let mut h = sha2::Sha256::new();
                parts.iter().for_each(|p| h.update(p));
                h.finalize().into()
            }
            TreeHash::Sm3 => {
                let mut h = sm3::Sm3::new();
                parts.iter().for_each(|p| h.update(p));
                h.finalize().into()
            }
        }
    }

    /// The hash of an empty tree: the hash of no bytes.
    pub fn empty(self) -> Hash {
        self.digest(&[])
    }

    /// A leaf's hash: `H(0x00 || entry)`.
    pub fn leaf(self, entry: &[u8]) -> Hash {
        self.digest(&[&[0x00], entry])
    }

    /// An interior node's hash: `H(0x01 || left || right)`.
    pub fn node(self, left: &Hash, right: &Hash) -> Hash {
        self.digest(&[&[0x01], left, right])
    }

    pub fn name(self) -> &'static str {
        match self {
            TreeHash::Sha256 => "sha256",
            TreeHash::Sm3 => "sm3",
        }
    }

    pub fn from_name(name: &str) -> Option<TreeHash> {
        match name {
            "sha256" => Some(TreeHash::Sha256),
            "sm3" => Some(TreeHash::Sm3),
            _ => None,
        }
    }
}

/// The right edge of a tree: the roots of the complete subtrees its size decomposes into
/// (one per set bit, largest first). Appending a leaf and the root need nothing else, so a
/// writer keeps only these (at most 64 hashes) between appends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<(Node, Hash)>,
}

impl Frontier {
    /// The edge of a tree of `size` leaves from its hashes, largest subtree first, as
    /// [`Frontier::to_bytes`] writes them; `None` when their number does not fit the size.
    pub fn from_bytes(size: u64, bytes: &[u8]) -> Option<Frontier> {
        let nodes = Frontier::edge(size);
        if bytes.len() != nodes.len() * 32 {
            return None;
        }
        let nodes = nodes
            .into_iter()
            .zip(bytes.chunks_exact(32))
            .map(|(n, h)| h.try_into().ok().map(|h| (n, h)))
            .collect::<Option<Vec<_>>>()?;
        Some(Frontier { size, nodes })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.nodes.iter().flat_map(|(_, h)| h.iter().copied()).collect()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The complete subtrees of a tree of `size` leaves, largest first.
    fn edge(size: u64) -> Vec<Node> {
        (0..64u8)
            .rev()
            .filter(|l| size >> l & 1 == 1)
            .map(|level| Node {
                level,
                index: (size >> level) - 1,
            })
            .collect()
    }

    /// Appends a leaf's hash.
    pub fn push(&mut self, tree: TreeHash, leaf: Hash) {
        let made = match append(tree, self.size, leaf, self) {
            Ok(made) => made,
            Err(never) => match never {},
        };
        self.size += 1;
        let mut known = std::mem::take(&mut self.nodes);
        known.extend(made);
        self.nodes = Frontier::edge(self.size)
            .into_iter()
            .filter_map(|n| known.iter().find(|(k, _)| *k == n).copied())
            .collect();
    }

    /// The root hash of the tree.
    pub fn root(&mut self, tree: TreeHash) -> Hash {
        match root(tree, self.size, self) {
            Ok(h) => h,
            Err(never) => match never {},
        }
    }
}

impl Hashes for Frontier {
    type Error = std::convert::Infallible;
    /// Only the edge's own nodes are ever asked for: an append needs the left neighbours of
    /// the subtrees it completes, which are on the edge, and the root is made of the edge.
    fn hash(&mut self, node: Node) -> Result<Hash, Self::Error> {
        Ok(self
            .nodes
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, h)| *h)
            .unwrap_or([0; 32]))
    }
}

/// Whether `proof` proves that `entry` is leaf `index` of the tree of `size` leaves whose root
/// is `root`. Checked by ct-merkle, an implementation that is not the one that made the proof.
pub fn verify_inclusion(
    tree: TreeHash,
    entry: &[u8],
    index: u64,
    size: u64,
    root: &Hash,
    proof: &[Hash],
) -> bool {
    fn with<D: ct_merkle::digest::Digest>(
        entry: &[u8],
        index: u64,
        size: u64,
        root: &Hash,
        proof: &[Hash],
    ) -> bool {
        let Ok(digest) = root.as_slice().try_into() else {
            return false;
        };
        let root = ct_merkle::RootHash::<D>::new(digest, size);
        let proof = ct_merkle::InclusionProof::<D>::from_bytes(proof.concat());
        index < size && root.verify_inclusion(&entry.to_vec(), index, &proof).is_ok()
    }
    match tree {
        TreeHash::Sha256 => with::<sha2::Sha256>(entry, index, size, root, proof),
        TreeHash::Sm3 => with::<sm3::Sm3>(entry, index, size, root, proof),
    }
}

/// Whether `proof` proves that the tree of `old_size` leaves with root `old_root` is a prefix
/// of the tree of `new_size` leaves with root `new_root` (RFC 9162 §2.1.4.2). Checked by
/// ct-merkle, an implementation that is not the one that made the proof.
pub fn verify_consistency(
    tree: TreeHash,
    old_size: u64,
    old_root: &Hash,
    new_size: u64,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    fn with<D: ct_merkle::digest::Digest>(
        old_size: u64,
        old_root: &Hash,
        new_size: u64,
        new_root: &Hash,
        proof: &[Hash],
    ) -> bool {
        let root = |r: &Hash, n: u64| {
            r.as_slice()
                .try_into()
                .ok()
                .map(|d| ct_merkle::RootHash::<D>::new(d, n))
        };
        let (Some(old), Some(new)) = (root(old_root, old_size), root(new_root, new_size)) else {
            return false;
        };
        if old_size == new_size {
            return old_root == new_root && proof.is_empty();
        }
        // Every tree extends the empty one.
        if old_size == 0 {
            return proof.is_empty();
        }
        let Ok(proof) = ct_merkle::ConsistencyProof::<D>::try_from_bytes(proof.concat()) else {
            return false;
        };
        old_size > 0 && old_size < new_size && new.verify_consistency(&old, &proof).is_ok()
    }
    match tree {
        TreeHash::Sha256 => with::<sha2::Sha256>(old_size, old_root, new_size, new_root, proof),
        TreeHash::Sm3 => with::<sm3::Sm3>(old_size, old_root, new_size, new_root, proof),
    }
}

/// A whole tree in memory, every level of it, built from its leaves' hashes: what an
/// auditor's check or an evidence package computes proofs from (2 × 32 bytes per leaf).
pub struct FullTree {
    levels: Vec<Vec<Hash>>,
}

impl FullTree {
    pub fn new(tree: TreeHash, leaves: Vec<Hash>) -> FullTree {
        let mut levels = vec![leaves];
        while let Some(last) = levels.last().filter(|l| l.len() > 1) {
            let up = last.chunks_exact(2).map(|p| tree.node(&p[0], &p[1])).collect();
            levels.push(up);
        }
        FullTree { levels }
    }

    pub fn size(&self) -> u64 {
        self.levels[0].len() as u64
    }
}

impl Hashes for FullTree {
    type Error = std::convert::Infallible;
    fn hash(&mut self, node: Node) -> Result<Hash, Self::Error> {
        // The tree functions ask only for complete subtrees inside the size they are given.
        Ok(self
            .levels
            .get(node.level as usize)
            .and_then(|l| l.get(node.index as usize))
            .copied()
            .unwrap_or([0; 32]))
    }
}

/// A complete subtree: `2^level` leaves from `index·2^level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    pub level: u8,
    pub index: u64,
}

/// Where the stored hashes of complete subtrees are read from.
pub trait Hashes {
    type Error;
    fn hash(&mut self, node: Node) -> Result<Hash, Self::Error>;
}

/// The nodes that appending leaf number `n` (from 0) completes, with their hashes: the leaf
/// itself and every subtree it closes, to be stored with it.
pub fn append<H: Hashes>(
    tree: TreeHash,
    n: u64,
    leaf: Hash,
    stored: &mut H,
) -> Result<Vec<(Node, Hash)>, H::Error> {
    let mut out = vec![(Node { level: 0, index: n }, leaf)];
    let (mut level, mut index, mut hash) = (0u8, n, leaf);
    while !index.is_multiple_of(2) {
        let left = stored.hash(Node {
            level,
            index: index - 1,
        })?;
        hash = tree.node(&left, &hash);
        (level, index) = (level + 1, index / 2);
        out.push((Node { level, index }, hash));
    }
    Ok(out)
}

/// The largest power of two smaller than `n` (n ≥ 2), as RFC 9162 splits a tree.
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The hash of leaves `lo..hi` (RFC 9162's MTH of that range): a stored node where the range is
/// one complete subtree, else its left complete part and the rest, recursively.
pub fn range_hash<H: Hashes>(tree: TreeHash, lo: u64, hi: u64, stored: &mut H) -> Result<Hash, H::Error> {
    let n = hi - lo;
    if n == 0 {
        return Ok(tree.empty());
    }
    if n.is_power_of_two() && lo.is_multiple_of(n) {
        return stored.hash(Node {
            level: n.trailing_zeros() as u8,
            index: lo / n,
        });
    }
    let k = split(n);
    let left = range_hash(tree, lo, lo + k, stored)?;
    let right = range_hash(tree, lo + k, hi, stored)?;
    Ok(tree.node(&left, &right))
}

/// The root hash of the tree of the first `size` leaves.
pub fn root<H: Hashes>(tree: TreeHash, size: u64, stored: &mut H) -> Result<Hash, H::Error> {
    range_hash(tree, 0, size, stored)
}

/// The inclusion proof of leaf `m` in the tree of the first `size` leaves (RFC 9162 §2.1.3.1,
/// PATH), leaf side first.
pub fn inclusion_proof<H: Hashes>(
    tree: TreeHash,
    m: u64,
    size: u64,
    stored: &mut H,
) -> Result<Vec<Hash>, H::Error> {
    fn path<H: Hashes>(
        t: TreeHash,
        m: u64,
        lo: u64,
        hi: u64,
        s: &mut H,
        out: &mut Vec<Hash>,
    ) -> Result<(), H::Error> {
        let n = hi - lo;
        if n <= 1 {
            return Ok(());
        }
        let k = split(n);
        if m < k {
            path(t, m, lo, lo + k, s, out)?;
            out.push(range_hash(t, lo + k, hi, s)?);
        } else {
            path(t, m - k, lo + k, hi, s, out)?;
            out.push(range_hash(t, lo, lo + k, s)?);
        }
        Ok(())
    }
    let mut out = Vec::new();
    path(tree, m, 0, size, stored, &mut out)?;
    Ok(out)
}

/// The proof that the tree of the first `old` leaves is a prefix of the tree of the first `new`
/// (RFC 9162 §2.1.4.1, PROOF), deepest first.
pub fn consistency_proof<H: Hashes>(
    tree: TreeHash,
    old: u64,
    new: u64,
    stored: &mut H,
) -> Result<Vec<Hash>, H::Error> {
    fn sub<H: Hashes>(
        t: TreeHash,
        m: u64,
        lo: u64,
        hi: u64,
        complete: bool,
        s: &mut H,
        out: &mut Vec<Hash>,
    ) -> Result<(), H::Error> {
        let n = hi - lo;
        if m == n {
            if !complete {
                out.push(range_hash(t, lo, hi, s)?);
            }
            return Ok(());
        }
        let k = split(n);
        if m <= k {
            sub(t, m, lo, lo + k, complete, s, out)?;
            out.push(range_hash(t, lo + k, hi, s)?);
        } else {
            sub(t, m - k, lo + k, hi, false, s, out)?;
            out.push(range_hash(t, lo, lo + k, s)?);
        }
        Ok(())
    }
    let mut out = Vec::new();
    if old > 0 && old < new {
        sub(tree, old, 0, new, true, stored, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::convert::Infallible;

    /// Stored hashes in memory, as the store keeps them in a table.
    #[derive(Default)]
    struct Memory(HashMap<Node, Hash>);

    impl Hashes for Memory {
        type Error = Infallible;
        fn hash(&mut self, node: Node) -> Result<Hash, Infallible> {
            Ok(self.0[&node])
        }
    }

    fn log(tree: TreeHash, entries: &[Vec<u8>]) -> Memory {
        let mut m = Memory::default();
        for (n, e) in entries.iter().enumerate() {
            let nodes = append(tree, n as u64, tree.leaf(e), &mut m).unwrap();
            m.0.extend(nodes);
        }
        m
    }

    /// The leaves of the reference vectors of transparency-dev/merkle (`testonly/reference_test.go`).
    fn reference() -> Vec<Vec<u8>> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|h| hex::decode(h).unwrap())
        .collect()
    }

    fn hexes(hashes: &[Hash]) -> String {
        hashes.iter().map(hex::encode).collect()
    }

    #[test]
    fn the_reference_vectors() {
        let t = TreeHash::Sha256;
        let mut m = log(t, &reference());
        assert_eq!(
            hex::encode(root(t, 8, &mut m).unwrap()),
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
        );
        assert_eq!(
            hex::encode(root(t, 0, &mut m).unwrap()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hexes(&inclusion_proof(t, 5, 8, &mut m).unwrap()),
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b\
             ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0\
             d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"
        );
        assert_eq!(
            hexes(&consistency_proof(t, 6, 8, &mut m).unwrap()),
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a\
             ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0\
             d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"
        );
        assert_eq!(
            hexes(&consistency_proof(t, 2, 5, &mut m).unwrap()),
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e\
             bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"
        );
        assert!(consistency_proof(t, 1, 1, &mut m).unwrap().is_empty());
    }

    proptest! {
        /// The writer's edge gives every intermediate root of the stored tree, survives being
        /// written out and read back at any size, and the in-memory tree gives the same proofs.
        #[test]
        fn the_edge_and_the_whole_tree_agree_with_the_stored_tree(size in 1usize..140, m in 0usize..140, sm3 in any::<bool>()) {
            let t = if sm3 { TreeHash::Sm3 } else { TreeHash::Sha256 };
            let entries: Vec<Vec<u8>> = (0..size).map(|i| format!("entry {i}").into_bytes()).collect();
            let mut stored = log(t, &entries);
            let mut edge = Frontier::default();
            for (n, e) in entries.iter().enumerate() {
                edge = Frontier::from_bytes(edge.size(), &edge.to_bytes()).unwrap();
                edge.push(t, t.leaf(e));
                prop_assert_eq!(edge.root(t), root(t, n as u64 + 1, &mut stored).unwrap());
            }
            prop_assert!(Frontier::from_bytes(edge.size() + 1, &edge.to_bytes()).is_none() || (edge.size() + 1).count_ones() == edge.size().count_ones());
            let mut whole = FullTree::new(t, entries.iter().map(|e| t.leaf(e)).collect());
            let (m, n) = (m % size, size as u64);
            prop_assert_eq!(
                inclusion_proof(t, m as u64, n, &mut whole).unwrap(),
                inclusion_proof(t, m as u64, n, &mut stored).unwrap()
            );
            let old = m as u64 + 1;
            prop_assert_eq!(
                consistency_proof(t, old, n, &mut whole).unwrap(),
                consistency_proof(t, old, n, &mut stored).unwrap()
            );
            let (root_old, root_n) = (root(t, old, &mut stored).unwrap(), root(t, n, &mut stored).unwrap());
            let proof = consistency_proof(t, old, n, &mut whole).unwrap();
            prop_assert!(verify_consistency(t, old, &root_old, n, &root_n, &proof));
            prop_assert!(verify_consistency(t, 0, &t.empty(), n, &root_n, &[]));
            prop_assert!(!verify_consistency(t, old, &t.leaf(b"x"), n, &root_n, &proof));
            let path = inclusion_proof(t, m as u64, n, &mut whole).unwrap();
            prop_assert!(verify_inclusion(t, &entries[m], m as u64, n, &root_n, &path));
            prop_assert!(!verify_inclusion(t, b"forged", m as u64, n, &root_n, &path));
        }

        /// Roots and proofs made from stored subtrees are those of ct-merkle's in-memory tree,
        /// and verify with ct-merkle, for both tree hashes.
        #[test]
        fn proofs_verify_with_an_independent_implementation(size in 1usize..70, m in 0usize..70, old in 1usize..70, sm3 in any::<bool>()) {
            let (m, old) = (m % size, (old - 1) % size + 1);
            let entries: Vec<Vec<u8>> = (0..size).map(|i| format!("entry {i}").into_bytes()).collect();
            if sm3 {
                check::<sm3::Sm3>(TreeHash::Sm3, &entries, m, old)?;
            } else {
                check::<sha2::Sha256>(TreeHash::Sha256, &entries, m, old)?;
            }
        }
    }

    fn check<D: ct_merkle::digest::Digest>(
        t: TreeHash,
        entries: &[Vec<u8>],
        m: usize,
        old: usize,
    ) -> Result<(), TestCaseError> {
        let mut stored = log(t, entries);
        let size = entries.len() as u64;
        let mut theirs = ct_merkle::mem_backed_tree::MemoryBackedTree::<D, Vec<u8>>::new();
        entries.iter().for_each(|e| theirs.push(e.clone()));
        let root_now = root(t, size, &mut stored).unwrap();
        let their_root = theirs.root();
        prop_assert_eq!(their_root.as_bytes().as_slice(), &root_now[..]);
        let ct_root = |r: Hash, n: u64| ct_merkle::RootHash::<D>::new(r.as_slice().try_into().unwrap(), n);
        let path = inclusion_proof(t, m as u64, size, &mut stored).unwrap();
        let proof = ct_merkle::InclusionProof::<D>::from_bytes(path.concat());
        prop_assert!(
            ct_root(root_now, size)
                .verify_inclusion(&entries[m], m as u64, &proof)
                .is_ok()
        );
        let root_then = root(t, old as u64, &mut stored).unwrap();
        let consistency = consistency_proof(t, old as u64, size, &mut stored).unwrap();
        let proof = ct_merkle::ConsistencyProof::<D>::try_from_bytes(consistency.concat()).unwrap();
        prop_assert!(
            ct_root(root_now, size)
                .verify_consistency(&ct_root(root_then, old as u64), &proof)
                .is_ok()
        );
        // A changed entry is not included; a changed old root is not consistent.
        let path_proof = ct_merkle::InclusionProof::<D>::from_bytes(path.concat());
        prop_assert!(
            ct_root(root_now, size)
                .verify_inclusion(&b"forged".to_vec(), m as u64, &path_proof)
                .is_err()
        );
        if old < entries.len() {
            prop_assert!(
                ct_root(root_now, size)
                    .verify_consistency(&ct_root(t.leaf(b"x"), old as u64), &proof)
                    .is_err()
            );
        }
        Ok(())
    }
}
