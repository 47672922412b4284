"""IR test setup: the `covers` marker (see tests/support/opcheck.py)."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "covers(*ops): the test checks the semantics of these registered ops")
