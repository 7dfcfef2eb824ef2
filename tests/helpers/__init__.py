"""Code the tests share, and the only place tests import shared code from (never another test module
or a conftest). One job a module, said in its docstring; api_fixtures and upload_fixtures are fixture
plugins that tests/conftest.py registers."""
