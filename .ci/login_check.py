"""The compose stack's login, from the host: wait until the proxy passes the right password
through to the UI, then require 401 without a password and with a wrong one. Used by
.ci/containers: python .ci/login_check.py URL USER PASSWORD"""

import base64
import sys
import time
import urllib.error
import urllib.request


def status(url: str, auth: str | None) -> int:
    req = urllib.request.Request(url + "/_stcore/health")
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        return urllib.request.urlopen(req, timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code


def main() -> int:
    url, user, pw = sys.argv[1:4]
    deadline = time.time() + 300
    while True:
        try:
            if status(url, f"{user}:{pw}") == 200:
                break
        except OSError:
            pass
        if time.time() > deadline:
            print(f"login_check: {url} did not pass the right password through in 300 s", file=sys.stderr)
            return 1
        time.sleep(1)
    codes = (status(url, None), status(url, f"{user}:wrong-{pw}"), status(url, f"{user}:{pw}"))
    print(f"   through the login: no password {codes[0]}, wrong password {codes[1]}, "
          f"right one {codes[2]}")
    return 0 if codes == (401, 401, 200) else 1


if __name__ == "__main__":
    sys.exit(main())
