"""The strict site build runs last in a session, so that it renders the tutorials from the
notebooks tests/e2e/test_notebooks.py has just executed instead of executing them again."""


def pytest_collection_modifyitems(items):
    last = [item for item in items if item.name == "test_the_site_builds_strictly"]
    items[:] = [item for item in items if item not in last] + last
