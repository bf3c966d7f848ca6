"""The issue benchmark's parts, run by bench.issue_bench.

- `tool`: what every tool has (command, environment, what it stored) and the checks of a run;
- `rgwtls`, `certbot`, `dehydrated`: one module per tool, with its command, config and files;
- `rounds`: the stack, the shared hook, one verified run, the warm-up, timed and profiling rounds;
- `profiling`: what the profiling runs measure (cProfile steps, `-X importtime`, the hook's time);
- `report`: the Markdown section for docs/performance.md.
"""
