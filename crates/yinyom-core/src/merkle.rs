//! Merkle trees over a ledger chain, as Certificate Transparency builds them
//! (RFC 9162 §2.1): leaves are the entries' hashes in `seq` order, a leaf
//! hashes as `SHA-256(0x00 ‖ entry hash)` and a node as
//! `SHA-256(0x01 ‖ left ‖ right)`.
//!
//! A signed checkpoint names a tree's size and root; an inclusion proof
//! (the audit path, `⌈log₂ n⌉` hashes) shows that one entry is leaf `m` of
//! that tree, so a receipt can be checked against a checkpoint without the
//! rest of the ledger.
//!
//! Every hash a proof or a root needs is the hash of a *perfect subtree*:
//! `2^level` leaves starting at `index · 2^level`. The service stores
//! those of level ≥ [`STORED_LEVEL`] as the tree grows ([`Frontier`]) and
//! computes the lower ones from at most one block of leaves, so a proof
//! costs a few indexed reads whatever the ledger's size. The functions here
//! take the subtree hashes from a closure and do no IO.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// Perfect subtrees of this level and above are stored; below it they are
/// computed from one block of `2^STORED_LEVEL` leaves.
pub const STORED_LEVEL: u32 = 8;

/// A perfect subtree: `2^level` leaves from `index << level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subtree {
    pub level: u32,
    pub index: u64,
}

impl Subtree {
    pub fn start(self) -> u64 {
        self.index << self.level
    }
    pub fn end(self) -> u64 {
        (self.index + 1) << self.level
    }
}

pub fn leaf_hash(entry_hash: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry_hash);
    h.finalize().into()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// A hash written as hex; `None` unless it is 32 bytes of hex.
pub fn hash_from_hex(text: &str) -> Option<Hash> {
    hex::decode(text).ok()?.try_into().ok()
}

/// The leaf of a ledger entry whose hash is `hex`.
pub fn leaf_of_hex(hex_hash: &str) -> Option<Hash> {
    let bytes = hex::decode(hex_hash).ok()?;
    Some(leaf_hash(&bytes))
}

/// The largest power of two strictly below `n` (`n ≥ 2`).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The perfect subtrees that make up the leaves `[start, end)`, left to
/// right, largest first. `start` must be aligned as it is wherever a tree
/// splits (a multiple of the largest piece): true for `[0, n)` and for the
/// right part of every split.
pub fn decompose(start: u64, end: u64) -> Vec<Subtree> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let len = end - at;
        let level = 63 - len.leading_zeros();
        // The largest piece that fits and is aligned at `at`.
        let align = if at == 0 { 63 } else { at.trailing_zeros() };
        let level = level.min(align);
        out.push(Subtree {
            level,
            index: at >> level,
        });
        at += 1u64 << level;
    }
    out
}

/// The root of the leaves `[start, end)` from its perfect subtrees
/// (`MTH` of RFC 9162 §2.1.1).
pub fn range_root(start: u64, end: u64, subtree: &mut impl FnMut(Subtree) -> Hash) -> Hash {
    let pieces = decompose(start, end);
    let mut iter = pieces.into_iter().rev();
    let Some(last) = iter.next() else {
        return empty_root();
    };
    let mut acc = subtree(last);
    for s in iter {
        acc = node_hash(&subtree(s), &acc);
    }
    acc
}

/// The root of a tree of `n` leaves.
pub fn root(n: u64, subtree: &mut impl FnMut(Subtree) -> Hash) -> Hash {
    range_root(0, n, subtree)
}

/// The root of a perfect subtree from its leaves (a power of two of them).
pub fn perfect_root(leaves: &[Hash]) -> Hash {
    debug_assert!(leaves.len().is_power_of_two());
    let mut level: Vec<Hash> = leaves.to_vec();
    while level.len() > 1 {
        level = level
            .chunks_exact(2)
            .map(|p| node_hash(&p[0], &p[1]))
            .collect();
    }
    level[0]
}

/// `MTH` straight from all the leaves: the reference the rest is tested
/// against, and what a verifier with the whole chain computes.
pub fn root_of_leaves(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root_of_leaves(&leaves[..k]), &root_of_leaves(&leaves[k..]))
        }
    }
}

/// The perfect subtrees an inclusion proof of leaf `m` in a tree of `n`
/// needs, so they can be fetched before [`inclusion_proof`] runs.
pub fn inclusion_needs(m: u64, n: u64) -> Vec<Subtree> {
    let mut out = Vec::new();
    let (mut start, mut len, mut m) = (0u64, n, m);
    while len > 1 {
        let k = split(len);
        if m < k {
            out.extend(decompose(start + k, start + len));
            len = k;
        } else {
            out.extend(decompose(start, start + k));
            start += k;
            len -= k;
            m -= k;
        }
    }
    out
}

/// The audit path of leaf `m` in a tree of `n` leaves (`PATH(m, D[n])` of
/// RFC 9162 §2.1.3.1), from the leaf up. `None` if `m ≥ n`.
pub fn inclusion_proof(
    m: u64,
    n: u64,
    subtree: &mut impl FnMut(Subtree) -> Hash,
) -> Option<Vec<Hash>> {
    if m >= n {
        return None;
    }
    let mut path = Vec::new();
    let (mut start, mut len, mut m) = (0u64, n, m);
    while len > 1 {
        let k = split(len);
        if m < k {
            path.push(range_root(start + k, start + len, subtree));
            len = k;
        } else {
            path.push(range_root(start, start + k, subtree));
            start += k;
            len -= k;
            m -= k;
        }
    }
    path.reverse();
    Some(path)
}

/// Check that `leaf` is leaf `m` of the tree of `n` leaves whose root is
/// `root`, by the audit path `proof` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(m: u64, n: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if m >= n {
        return false;
    }
    let (mut f, mut s) = (m, n - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// The right edge of a growing tree of stored subtrees (levels ≥
/// [`STORED_LEVEL`]): push each completed block of `2^STORED_LEVEL`
/// leaves in order and it returns every perfect subtree that completes, to
/// be stored. Start it from the stored subtrees that make up the blocks
/// already pushed ([`Frontier::needs`]).
#[derive(Debug, Default, Clone)]
pub struct Frontier {
    stack: Vec<(Subtree, Hash)>,
}

impl Frontier {
    /// The stored subtrees that make up the first `blocks` blocks.
    pub fn needs(blocks: u64) -> Vec<Subtree> {
        decompose(0, blocks << STORED_LEVEL)
    }

    /// Resume from [`Frontier::needs`]`(blocks)` and their hashes, in order.
    pub fn resume(nodes: Vec<(Subtree, Hash)>) -> Frontier {
        Frontier { stack: nodes }
    }

    /// Add the next block's root (its index is the next block's); the
    /// block and every subtree it completes are returned.
    pub fn push(&mut self, block: u64, hash: Hash) -> Vec<(Subtree, Hash)> {
        let mut done = vec![(
            Subtree {
                level: STORED_LEVEL,
                index: block,
            },
            hash,
        )];
        self.stack.push(done[0]);
        while self.stack.len() >= 2 {
            let (r, rh) = self.stack[self.stack.len() - 1];
            let (l, lh) = self.stack[self.stack.len() - 2];
            if l.level != r.level || l.index + 1 != r.index || l.index % 2 != 0 {
                break;
            }
            self.stack.truncate(self.stack.len() - 2);
            let parent = (
                Subtree {
                    level: l.level + 1,
                    index: l.index / 2,
                },
                node_hash(&lh, &rh),
            );
            self.stack.push(parent);
            done.push(parent);
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    fn from_leaves(all: &[Hash]) -> impl FnMut(Subtree) -> Hash + '_ {
        move |s: Subtree| perfect_root(&all[s.start() as usize..s.end() as usize])
    }

    #[test]
    fn roots_agree_with_the_reference_for_every_size() {
        let all = leaves(300);
        for n in 0..=300u64 {
            let mut sub = from_leaves(&all);
            assert_eq!(
                root(n, &mut sub),
                root_of_leaves(&all[..n as usize]),
                "n = {n}"
            );
        }
    }

    #[test]
    fn every_leaf_proves_and_no_other_does() {
        let all = leaves(70);
        for n in 1..=70u64 {
            let r = root_of_leaves(&all[..n as usize]);
            for m in 0..n {
                let mut sub = from_leaves(&all);
                let proof = inclusion_proof(m, n, &mut sub).unwrap();
                assert!(proof.len() <= 64 - (n - 1).leading_zeros() as usize);
                assert!(
                    verify_inclusion(m, n, &all[m as usize], &proof, &r),
                    "{m}/{n}"
                );
                // The wrong leaf, position or root fails. (The size is bound
                // by the signed root: a path may have the same shape in a
                // tree one larger.)
                let other = (m + 1) % n;
                if other != m {
                    assert!(!verify_inclusion(m, n, &all[other as usize], &proof, &r));
                    assert!(!verify_inclusion(other, n, &all[m as usize], &proof, &r));
                }
                assert!(!verify_inclusion(
                    m,
                    n,
                    &all[m as usize],
                    &proof,
                    &empty_root()
                ));
                // It uses exactly the subtrees `inclusion_needs` names.
                let mut asked = Vec::new();
                let mut rec = |s: Subtree| {
                    asked.push(s);
                    perfect_root(&all[s.start() as usize..s.end() as usize])
                };
                inclusion_proof(m, n, &mut rec).unwrap();
                let mut needs = inclusion_needs(m, n);
                asked.sort();
                needs.sort();
                assert_eq!(asked, needs);
            }
        }
    }

    #[test]
    fn a_frontier_stores_every_subtree_a_big_tree_needs() {
        let block = 1u64 << STORED_LEVEL;
        let n = block * 13 + 77;
        let all = leaves(n);
        let mut stored: HashMap<Subtree, Hash> = HashMap::new();
        // Built in two runs, the second resumed from what the first stored.
        let mut f = Frontier::default();
        let blocks = n / block;
        for b in 0..5 {
            let h = perfect_root(&all[(b * block) as usize..((b + 1) * block) as usize]);
            stored.extend(f.push(b, h));
        }
        let resume = Frontier::needs(5)
            .into_iter()
            .map(|s| (s, stored[&s]))
            .collect();
        let mut f = Frontier::resume(resume);
        for b in 5..blocks {
            let h = perfect_root(&all[(b * block) as usize..((b + 1) * block) as usize]);
            stored.extend(f.push(b, h));
        }
        let mut sub = |s: Subtree| {
            if s.level >= STORED_LEVEL {
                stored[&s]
            } else {
                perfect_root(&all[s.start() as usize..s.end() as usize])
            }
        };
        assert_eq!(root(n, &mut sub), root_of_leaves(&all));
        for m in [0, 1, 255, 256, 1000, 3071, n - 1] {
            let proof = inclusion_proof(m, n, &mut sub).unwrap();
            assert!(verify_inclusion(
                m,
                n,
                &all[m as usize],
                &proof,
                &root_of_leaves(&all)
            ));
        }
        // Below the stored level, a need lies inside one block.
        for m in 0..n {
            for s in inclusion_needs(m, n) {
                if s.level < STORED_LEVEL {
                    assert_eq!(s.start() / block, (s.end() - 1) / block);
                }
            }
        }
    }
}
