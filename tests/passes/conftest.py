import pytest

from graphnet.core import executor


@pytest.fixture(autouse=True)
def fused_at_any_batch(monkeypatch):
    """The passes' tests run small batches through the fused plans in eval mode too (the
    executor would otherwise run an eval walk of a batch that small gate by gate)."""
    monkeypatch.setattr(executor, "SMALL_BATCH", 0)


@pytest.fixture
def small_batch_plan(fused_at_any_batch, monkeypatch):
    """For the chain passes' tests: small batches take the small-batch plan, as outside
    the tests."""
    monkeypatch.setattr(executor, "SMALL_BATCH", 4)
