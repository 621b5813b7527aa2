"""schemathesis hooks for fuzzing a running API: authentication by registering and logging in.

Loaded by ``SCHEMATHESIS_HOOKS=tests.fuzz.hooks`` (see ``tests/fuzz/test_api_fuzz.py``). The account is
read from ``IM_FUZZ_URL``, ``IM_FUZZ_USERNAME`` and ``IM_FUZZ_PASSWORD``; a ``401`` (the fuzzer logged this
device out, say) makes the next request log in again.
"""

from __future__ import annotations

import os
import time

import requests
import schemathesis


@schemathesis.auth(refresh_interval=60)
class LoginAuth:
    """A bearer token from ``POST /v1/auth/login`` (the account is registered first if it is new)."""

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        url = os.environ["IM_FUZZ_URL"]
        account = {"username": os.environ["IM_FUZZ_USERNAME"], "password": os.environ["IM_FUZZ_PASSWORD"]}
        requests.post(f"{url}/v1/auth/register", json=account, timeout=10)  # 409 once it exists
        for _ in range(10):
            response = requests.post(f"{url}/v1/auth/login", json={**account, "device": "fuzz"}, timeout=10)
            if response.status_code != 429:
                break
            # The fuzzer's own failed logins may have slowed logins from this address down.
            time.sleep(min(float(response.headers.get("Retry-After", "1")), 5.0))
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
