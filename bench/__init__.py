"""Benchmarks of rgwtls against the tools it replaces; see docs/performance.md.

- `harness`: what both share (a measured child, medians, a section of the docs);
- `issue_bench`: `rgwtls issue` against certbot and dehydrated, built from `bench.issue`;
- `deploy_bench`: `rgwtls deploy` against the shell job it replaces.
"""
