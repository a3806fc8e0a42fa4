#!/usr/bin/env python3
"""Unit tests of scripts/loadtest.py's arithmetic: python3 scripts/loadtest_test.py"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loadtest  # noqa: E402


def stream(first, n, dt, tokens=None):
    chunks = [first + i * dt for i in range(n)]
    return {"start": 0.0, "first": chunks[0], "last": chunks[-1],
            "tokens": tokens if tokens is not None else n, "chunks": chunks}


class SteadyRate(unittest.TestCase):
    def test_streams_decoding_together(self):
        # Two streams, one token every 0.1 s each, the second joining 1 s later: over the
        # window where both decode the rate is 20 tok/s.
        ok = [stream(0.0, 41, 0.1), stream(1.0, 31, 0.1)]
        rate, window = loadtest.steady_rate(ok)
        self.assertAlmostEqual(window, 3.0, places=6)
        self.assertAlmostEqual(rate, 20.0, delta=0.01)

    def test_chunks_carrying_several_tokens_are_weighted(self):
        ok = [stream(0.0, 11, 0.1, tokens=22)]
        rate, _ = loadtest.steady_rate(ok)
        self.assertAlmostEqual(rate, 20.0, delta=0.01)

    def test_disjoint_streams_have_no_window(self):
        ok = [stream(0.0, 5, 0.1), stream(10.0, 5, 0.1)]
        self.assertEqual(loadtest.steady_rate(ok), (None, 0.0))


if __name__ == "__main__":
    unittest.main()
