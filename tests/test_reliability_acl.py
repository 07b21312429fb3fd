"""Issue 6, least privilege: the whole contract suite, run as a restricted ACL user.

The user may touch only keys starting with ``t`` (every test namespace does) and run only
the commands embmemo needs (see test_reliability_security.REQUIRED_RULES). After every
test the server's ACL LOG must be empty: nothing embmemo sent was denied.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
import test_contract
from reliability_support import running
from servers import RedisServer
from test_reliability_security import create_user

# Every contract test and the fixtures they use, collected again in this module, where
# ``backend_url`` below (the restricted user on a private server) replaces the matrix.
globals().update({name: value for name, value in vars(test_contract).items()
                  if name.startswith("test_") or name in ("make_cache", "api")})


@pytest.fixture(scope="module")
def acl_server() -> Iterator[tuple[RedisServer, redis.Redis]]:
    with running() as server, server.client() as admin:
        create_user(admin, "embmemo", "contract-pw", "t*")
        yield server, admin


@pytest.fixture
def backend_url(acl_server: tuple[RedisServer, redis.Redis]) -> str:
    server, _ = acl_server
    return f"redis://embmemo:contract-pw@127.0.0.1:{server.port}/0"


@pytest.fixture(autouse=True)
def _nothing_denied(acl_server: tuple[RedisServer, redis.Redis]) -> Iterator[None]:
    _, admin = acl_server
    admin.acl_log_reset()
    yield
    assert admin.acl_log() == []
