"""fts-bm25 kernels: the one file the autoresearch loop may edit.

A compiled, faithful port of Lance's full-text search over one index partition (lancedb/lance
d2039d75, 1.0.0-beta.1), float32, one thread, no fastmath:
  - rust/lance-index/src/scalar/inverted/wand.rs  Wand::search (OR query, no filter, no phrase):
    Wand::new sorts the posting iterators by PostingIterator::cmp (current doc, then the list's
    approximate upper bound = its stored max score, then the token id); next() = find_pivot_term
    (prefix sum of upper bounds >= threshold), check_block_max (shallow_next every iterator up to
    the pivot, sum of block max x (K1 + 1) > threshold) else get_new_candidate + move_term,
    check_pivot_aligned (next(pivot doc) from the pivot down, bubble_up); score() sums
    scorer.score over postings[..=pivot] in iterator order; the top k in a BinaryHeap of
    Reverse(ScoredDoc), replaced only when score > its min, threshold = that min x wand_factor
    (1.0); move_preceding (next(doc + 1) up to the pivot, drop exhausted lists, sort_unstable).
    PostingIterator::next (skip whole blocks by their first doc id, then scan), shallow_next,
    block_max_score, next_block_first_doc, swap_remove + bubble_up.
  - rust/lance-index/src/scalar/inverted/scorer.rs  IndexBM25Scorer: query_weight(token) =
    idf(posting_len, num_docs) recomputed on every score() call (upstream looks it up in a
    HashMap each time), doc_weight(f, dl) = (K1 + 1)·f / (f + K1·((1 − B) + B·dl/avgdl)),
    idf = ln((N − df + 0.5)/(df + 0.5) + 1), avgdl = total_tokens as f32 / num_docs as f32.
  - rust/lance-index/src/scalar/inverted/index.rs  InvertedPartition::bm25_search (token ids
    sorted and deduplicated, absent tokens dropped) and InvertedIndex::bm25_search (one partition:
    the candidates re-scored with the same expression in the same order, into_sorted_vec: score
    descending).
  - rust/lance-index/src/scalar/inverted/encoding.rs  blocks of 128 postings with their max
    score and first doc id; here stored decompressed (u32 doc ids and freqs), so Lance's
    bit-unpacking is not part of this op.
Simplified: ties. Upstream's heap orders equal scores by each candidate's (token, freq) list,
here by doc id (a tied doc with a larger id is evicted first; the output's ties come out in
ascending doc id); the answer's scores are the same.
No tuning beyond upstream's loops: this is the bar a keep must beat.
"""

import math

import numpy as np
from numba import njit

K1 = np.float32(1.2)
B = np.float32(0.75)
BLOCK_SIZE = 128
TERMINATED = np.int64(2 ** 62)          # TERMINATED_DOC_ID: past every doc id


@njit(cache=True)
def _idf(df, num_docs):
    n = np.float32(num_docs)
    d = np.float32(df)
    return np.float32(math.log(((n - d) + np.float32(0.5)) / (d + np.float32(0.5)) + np.float32(1.0)))


@njit(cache=True)
def _doc_weight(freq, doc_tokens, avgdl):
    f = np.float32(freq)
    doc_norm = K1 * ((np.float32(1.0) - B) + (B * np.float32(doc_tokens)) / avgdl)
    return ((K1 + np.float32(1.0)) * f) / (f + doc_norm)


# --- PostingIterator: per iterator i, its list [start, start + length), position, shallow block ----

@njit(cache=True)
def _doc(i, start, length, index, doc_ids):
    if index[i] >= length[i]:
        return TERMINATED
    return np.int64(doc_ids[start[i] + index[i]])


@njit(cache=True)
def _less(a, b, start, length, index, doc_ids, upper, token):
    # PostingIterator::cmp: doc id (an exhausted list last), then upper bound, then token id.
    da = _doc(a, start, length, index, doc_ids)
    db = _doc(b, start, length, index, doc_ids)
    if da != db:
        return da < db
    if upper[a] != upper[b]:
        return upper[a] < upper[b]
    return token[a] < token[b]


@njit(cache=True)
def _next(i, least, start, length, index, block, doc_ids):
    # PostingIterator::next: skip whole blocks whose successor starts at or before least, then scan.
    nblocks = (length[i] + BLOCK_SIZE - 1) // BLOCK_SIZE
    b = index[i] // BLOCK_SIZE
    while b + 1 < nblocks and np.int64(doc_ids[start[i] + (b + 1) * BLOCK_SIZE]) <= least:
        b += 1
    index[i] = max(index[i], b * BLOCK_SIZE)
    while index[i] < length[i] and np.int64(doc_ids[start[i] + index[i]]) < least:
        index[i] += 1
    block[i] = index[i] // BLOCK_SIZE


@njit(cache=True)
def _shallow_next(i, least, start, length, block, doc_ids):
    nblocks = (length[i] + BLOCK_SIZE - 1) // BLOCK_SIZE
    while block[i] + 1 < nblocks and np.int64(doc_ids[start[i] + (block[i] + 1) * BLOCK_SIZE]) <= least:
        block[i] += 1


@njit(cache=True)
def _next_block_first_doc(i, start, length, block, doc_ids):
    nblocks = (length[i] + BLOCK_SIZE - 1) // BLOCK_SIZE
    if block[i] + 1 >= nblocks:
        return TERMINATED
    return np.int64(doc_ids[start[i] + (block[i] + 1) * BLOCK_SIZE])


# --- the posting vector: order[0:m] holds iterator numbers, kept sorted by _less ------------------

@njit(cache=True)
def _bubble_up(order, m, pos, start, length, index, doc_ids, upper, token):
    if pos >= m:
        return
    for i in range(pos + 1, m):
        if not _less(order[i], order[i - 1], start, length, index, doc_ids, upper, token):
            break
        order[i - 1], order[i] = order[i], order[i - 1]


@njit(cache=True)
def _sort(order, m, start, length, index, doc_ids, upper, token):
    for i in range(1, m):
        x = order[i]
        j = i
        while j > 0 and _less(x, order[j - 1], start, length, index, doc_ids, upper, token):
            order[j] = order[j - 1]
            j -= 1
        order[j] = x


# --- the top-k heap: a min-heap on (score, -doc): its root is the weakest, ties lose by doc id ------

@njit(cache=True)
def _weaker(sa, da, sb, db):
    return sa < sb or (sa == sb and da > db)


@njit(cache=True)
def _sift_down(hs, hd, n, pos):
    while True:
        child = 2 * pos + 1
        if child >= n:
            return
        if child + 1 < n and _weaker(hs[child + 1], hd[child + 1], hs[child], hd[child]):
            child += 1
        if not _weaker(hs[child], hd[child], hs[pos], hd[pos]):
            return
        hs[pos], hs[child] = hs[child], hs[pos]
        hd[pos], hd[child] = hd[child], hd[pos]
        pos = child


@njit(cache=True)
def _push(hs, hd, n, score, doc):
    pos = n
    hs[pos] = score
    hd[pos] = doc
    while pos > 0:
        parent = (pos - 1) // 2
        if not _weaker(hs[pos], hd[pos], hs[parent], hd[parent]):
            break
        hs[pos], hs[parent] = hs[parent], hs[pos]
        hd[pos], hd[parent] = hd[parent], hd[pos]
        pos = parent


@njit(cache=True)
def _wand(terms, offsets, doc_ids, freqs, block_offsets, block_max, max_scores, doc_lengths, num_docs,
          avgdl, k, out_ids, out_scores):
    # InvertedPartition::bm25_search: the distinct token ids that have postings, one iterator each.
    t = terms.size
    start = np.empty(t, dtype=np.int64)
    length = np.empty(t, dtype=np.int64)
    bstart = np.empty(t, dtype=np.int64)
    index = np.zeros(t, dtype=np.int64)
    block = np.zeros(t, dtype=np.int64)
    upper = np.empty(t, dtype=np.float32)
    token = np.empty(t, dtype=np.int64)
    m = 0
    for j in range(t):
        term = terms[j]
        if offsets[term + 1] > offsets[term]:
            start[m] = offsets[term]
            length[m] = offsets[term + 1] - offsets[term]
            bstart[m] = block_offsets[term]
            upper[m] = max_scores[term]
            token[m] = term
            m += 1
    order = np.arange(m)
    _sort(order, m, start, length, index, doc_ids, upper, token)                 # Wand::new

    k1p1 = K1 + np.float32(1.0)
    threshold = np.float32(0.0)
    hs = np.empty(k, dtype=np.float32)
    hd = np.empty(k, dtype=np.int64)
    n = 0
    cur_doc = np.int64(-1)
    while True:
        # next(): the next candidate doc and the last iterator on it, or none
        found = False
        doc = np.int64(0)
        last = 0
        while m > 0:
            # find_pivot_term
            acc = np.float32(0.0)
            pivot = -1
            for p in range(m):
                acc += upper[order[p]]
                if acc >= threshold:
                    pivot = p
                    break
            if pivot < 0:
                break
            doc = _doc(order[pivot], start, length, index, doc_ids)
            last = pivot
            while last + 1 < m and _doc(order[last + 1], start, length, index, doc_ids) == doc:
                last += 1
            # check_block_max
            bound = np.float32(0.0)
            for p in range(last + 1):
                i = order[p]
                _shallow_next(i, doc, start, length, block, doc_ids)
                bound += block_max[bstart[i] + block[i]] * k1p1
            if not bound > threshold:
                # get_new_candidate: the largest upper bound up to the pivot moves to the least of
                # their next blocks' first docs and the later iterators' docs
                picked = last
                best = upper[order[last]]
                least = _next_block_first_doc(order[last], start, length, block, doc_ids)
                for p in range(last - 1, -1, -1):
                    nb = _next_block_first_doc(order[p], start, length, block, doc_ids)
                    if nb < least:
                        least = nb
                    if upper[order[p]] > best:
                        best = upper[order[p]]
                        picked = p
                for p in range(last + 1, m):
                    d = _doc(order[p], start, length, index, doc_ids)
                    if d < least:
                        least = d
                if least == TERMINATED:
                    break
                # move_term
                _next(order[picked], least, start, length, index, block, doc_ids)
                if _doc(order[picked], start, length, index, doc_ids) == TERMINATED:
                    m -= 1
                    order[picked] = order[m]
                _bubble_up(order, m, picked, start, length, index, doc_ids, upper, token)
                continue
            # check_pivot_aligned
            aligned = True
            for p in range(pivot, -1, -1):
                _next(order[p], doc, start, length, index, block, doc_ids)
                d = _doc(order[p], start, length, index, doc_ids)
                if d != doc:
                    if d == TERMINATED:
                        m -= 1
                        order[p] = order[m]
                    _bubble_up(order, m, p, start, length, index, doc_ids, upper, token)
                    aligned = False
                    break
                _bubble_up(order, m, p, start, length, index, doc_ids, upper, token)
            if not aligned:
                continue
            found = True
            break
        if not found:
            break
        if cur_doc >= doc:
            continue
        cur_doc = doc
        # score(): every iterator up to the pivot sits on doc, summed in iterator order
        dl = doc_lengths[doc]
        score = np.float32(0.0)
        for p in range(last + 1):
            i = order[p]
            if index[i] < length[i]:
                score += _idf(length[i], num_docs) * _doc_weight(freqs[start[i] + index[i]], dl, avgdl)
        if n < k:
            _push(hs, hd, n, score, doc)
            n += 1
            if n == k:
                threshold = hs[0]
        elif score > hs[0]:
            # pop + push, as BinaryHeap does
            n -= 1
            hs[0] = hs[n]
            hd[0] = hd[n]
            _sift_down(hs, hd, n, 0)
            _push(hs, hd, n, score, doc)
            n += 1
            threshold = hs[0]
        # move_preceding
        for p in range(last + 1):
            _next(order[p], doc + 1, start, length, index, block, doc_ids)
        p = 0
        while p < m:
            if _doc(order[p], start, length, index, doc_ids) == TERMINATED:
                m -= 1
                order[p] = order[m]
            else:
                p += 1
        _sort(order, m, start, length, index, doc_ids, upper, token)
    # into_sorted_vec: pop the weakest to the back, so the output is score descending
    count = n
    while n > 0:
        n -= 1
        out_scores[n] = hs[0]
        out_ids[n] = hd[0]
        hs[0] = hs[n]
        hd[0] = hd[n]
        _sift_down(hs, hd, n, 0)
    return count


class Bm25Kernel:
    def __init__(self, num_docs, total_tokens, doc_lengths, offsets, doc_ids, freqs, block_offsets,
                 block_max_scores, max_scores):
        self.num_docs = num_docs
        self.avgdl = np.float32(np.float32(total_tokens) / np.float32(num_docs))
        self.doc_lengths = doc_lengths
        self.offsets = offsets
        self.doc_ids = doc_ids
        self.freqs = freqs
        self.block_offsets = block_offsets
        self.block_max_scores = block_max_scores
        self.max_scores = max_scores

    def search(self, query_terms, query_offsets, k, out_ids, out_scores, out_counts):
        for q in range(query_offsets.size - 1):
            # sorted, deduplicated token ids
            terms = np.unique(query_terms[query_offsets[q]:query_offsets[q + 1]]).astype(np.int64)
            out_counts[q] = _wand(terms, self.offsets, self.doc_ids, self.freqs, self.block_offsets,
                                  self.block_max_scores, self.max_scores, self.doc_lengths, self.num_docs,
                                  self.avgdl, k, out_ids[q], out_scores[q])
