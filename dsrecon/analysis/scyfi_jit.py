"""Low-level compiled helpers of the SCYFI kernel (numba): borrowed array views, random numbers,
the memo of evaluated itineraries and growable buffers.

Glossary: k cycle order, S pattern bits, n itinerary bits (k S), words 64-bit words of a packed
itinerary.

Used by the compiled search and region pool of :mod:`.scyfi_kernel`:

* :func:`_borrow` / :func:`_borrow_form` -- array views without a reference count, so that the
  search pays no atomic incref/decref pair per helper call;
* :func:`_rand` / :func:`_randint` -- a SplitMix64 stream (Steele, Lea & Flood, "Fast splittable
  pseudorandom number generators", OOPSLA 2014) kept in a (1,) uint64 array, with Lemire's
  multiply-shift reduction to an interval (Lemire, ACM TOMACS 29:3, 2019); :func:`_draw`, the
  compiled :meth:`.scyfi_numpy.RegionPool.draw`;
* :func:`_slot` / :func:`_rehash` -- the memo of evaluated itineraries: a flat table of 2^n flags
  for n <= :data:`.scyfi_kernel.DIRECT_BITS`, else an open-addressing hash table with linear
  probing over the bit-packed itinerary (exact: keys are compared word by word);
* :func:`_grow` / :func:`_room` -- arrays grown by doubling and the FIFO of neighbour seeds.

The helpers exist only when numba is installed (:func:`.scyfi_kernel.available`).
"""

from __future__ import annotations

import numpy as np

try:  # numba is a declared dependency; without it the kernel is unavailable (scyfi_kernel.available)
    import numba
    from numba import njit
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover
    numba = None


if numba is not None:
    _U = np.uint64

    @intrinsic
    def _borrow(typingctx, arr):
        """A view of ``arr`` without a reference count (NULL meminfo).

        Every array a compiled function touches costs an atomic incref/decref pair per call
        (~40% of the search's time on small matrices). The search borrows its arrays once; the
        owners are held by the Python caller (or by live locals of the search) for the whole
        call, so the borrowed views never outlive the data.
        """
        def codegen(context, builder, sig, args):
            src = context.make_array(sig.args[0])(context, builder, value=args[0])
            out = context.make_array(sig.return_type)(context, builder)
            out.meminfo = cgutils.get_null_value(out.meminfo.type)
            out.parent = cgutils.get_null_value(out.parent.type)
            out.nitems, out.itemsize, out.data = src.nitems, src.itemsize, src.data
            out.shape, out.strides = src.shape, src.strides
            return out._getvalue()

        return arr(arr), codegen

    @njit(cache=True)
    def _borrow_form(F):
        return (_borrow(F[0]), _borrow(F[1]), _borrow(F[2]), _borrow(F[3]), _borrow(F[4]), _borrow(F[5]),
                _borrow(F[6]), _borrow(F[7]), _borrow(F[8]), _borrow(F[9]), _borrow(F[10]), _borrow(F[11]),
                _borrow(F[12]), _borrow(F[13]))

    @njit(cache=True, inline="always")
    def _mix(z):
        z = (z ^ (z >> _U(30))) * _U(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _U(27))) * _U(0x94D049BB133111EB)
        return z ^ (z >> _U(31))

    @njit(cache=True, inline="always")
    def _rand(state):
        """SplitMix64: the next 64 random bits of the stream kept in state (1,) uint64."""
        state[0] += _U(0x9E3779B97F4A7C15)
        return _mix(state[0])

    @njit(cache=True, inline="always")
    def _randint(state, n):
        """Uniform in [0, n), n < 2^32 (Lemire's multiply-shift on the top 32 bits)."""
        return np.int64(((_rand(state) >> _U(32)) * _U(n)) >> _U(32))

    # --------------------------------------------------- memo (set of itineraries) and queue
    @njit(cache=True, inline="always")
    def _slot(keys, used, seq, key, direct):
        """Pack seq (n,) uint8 into key (words,) uint64; return its slot in the table: the key
        itself when ``direct`` (tables of 2^n entries, n <= DIRECT_BITS), else open addressing with
        linear probing (keys compared word by word: exact)."""
        key[:] = 0
        for w in range(key.size):
            acc = _U(0)
            for i in range(64 * w, min(seq.size, 64 * w + 64)):
                acc |= _U(seq[i]) << _U(i - 64 * w)
            key[w] = acc
        if direct:
            return np.int64(key[0])
        mask = used.size - 1
        h = _U(0x9E3779B97F4A7C15)
        for w in range(key.size):
            h = _mix(h ^ key[w])
        i = np.int64(h & _U(mask))
        while used[i]:
            same = True
            for w in range(key.size):
                same = same and keys[i, w] == key[w]
            if same:
                return i
            i = (i + 1) & mask
        return i

    @njit(cache=True)
    def _rehash(keys, used):
        """The hash table at twice the size."""
        nk = np.zeros((2 * used.size, keys.shape[1]), dtype=np.uint64)
        nu = np.zeros(2 * used.size, dtype=np.bool_)
        for r in range(used.size):
            if used[r]:
                mask, h = nu.size - 1, _U(0x9E3779B97F4A7C15)
                for w in range(keys.shape[1]):
                    h = _mix(h ^ keys[r, w])
                i = np.int64(h & _U(mask))
                while nu[i]:
                    i = (i + 1) & mask
                nk[i], nu[i] = keys[r], True
        return nk, nu

    @njit(cache=True)
    def _grow(a, n):
        """a with room for at least n rows (doubling), contents kept."""
        if n <= a.shape[0]:
            return a
        b = np.zeros((max(n, 2 * a.shape[0]),) + a.shape[1:], dtype=a.dtype)
        b[: a.shape[0]] = a
        return b

    @njit(cache=True)
    def _room(q, head, tail):
        """The FIFO rows q[head:tail] with room for one more row -> (q, head, tail): compacted
        when rows were consumed, else doubled."""
        if tail < q.shape[0]:
            return q, head, tail
        if head > 0:
            q[: tail - head] = q[head:tail].copy()
            return q, 0, tail - head
        return _grow(q, tail + 1), head, tail

    @njit(cache=True)
    def _draw(cur, k, S, state, pool, traj_bits, valid_len, ok_traj):
        """A random itinerary (as RegionPool.draw): 1/3 uniform, 1/3 pool, 1/3 trajectory window."""
        src = _randint(state, 3)
        if src == 1 and pool.shape[0] > 0:
            for j in range(k):
                cur[j * S:(j + 1) * S] = pool[_randint(state, pool.shape[0])]
        elif src == 2 and ok_traj.size > 0:
            ti = ok_traj[_randint(state, ok_traj.size)]
            start = _randint(state, valid_len[ti] - k + 1)
            for j in range(k):
                cur[j * S:(j + 1) * S] = traj_bits[ti, start + j]
        else:
            bits = _U(0)
            for i in range(cur.size):
                if i % 64 == 0:
                    bits = _rand(state)
                cur[i] = np.uint8(bits & _U(1))
                bits >>= _U(1)
