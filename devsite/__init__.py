"""The development site: a whole rgwtls site on 127.0.0.1, made of real servers.

Used by the tests, the demo and the benchmarks, and runnable by hand with
`python -m devsite up`; see README.md beside this file. Not shipped in the
wheel: only `src/rgwtls` is.
"""
