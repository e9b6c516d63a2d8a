#!/usr/bin/python3
"""Example thresig key provider program (`command` kind, `get-key` mode).

Serves key-encryption keys from a directory of versioned key files, the same
layout the `file` provider reads: key `<id>` is the file `<id>.key` (64 hex
digits or base64 of 32 bytes), the current key is named by a file `current`,
or else it is the key whose id ends in the highest number.

Usage in the signer's configuration:

    [key_provider]
    kind = "command"
    mode = "get-key"
    command = ["/usr/bin/python3", "/etc/thresig/key-provider-dir.py", "/etc/thresig/keys"]

Protocol: one JSON object on stdin, one on stdout (see docs/key-providers.md).
Supported operations: `key-id` and `get-key`; `wrap` and `unwrap` are refused
with `denied`, since this program hands out keys rather than keeping them.
Diagnostics go to stderr, which the signer logs; never write a key there.
"""

import base64
import binascii
import json
import os
import re
import stat
import sys

ID_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")


class Refusal(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def trailing_number(key_id):
    match = re.search(r"[0-9]+$", key_id)
    return int(match.group(0)) if match else None


def current_id(directory):
    try:
        with open(os.path.join(directory, "current"), encoding="ascii") as f:
            key_id = f.read().strip()
    except FileNotFoundError:
        key_id = None
    if key_id is not None:
        if not ID_RE.match(key_id):
            raise Refusal("unavailable", "`current` does not hold a valid key id")
        return key_id
    versions = {}
    for name in os.listdir(directory):
        if name.endswith(".key") and ID_RE.match(name[:-4]):
            number = trailing_number(name[:-4])
            if number is None:
                raise Refusal("unavailable", "no `current` file and an id without a version number")
            versions.setdefault(number, []).append(name[:-4])
    if not versions:
        raise Refusal("unavailable", "no key files")
    newest = versions[max(versions)]
    if len(newest) != 1:
        raise Refusal("unavailable", "two keys share the highest version number")
    return newest[0]


def read_key(directory, key_id):
    if not ID_RE.match(key_id):
        raise Refusal("unknown_key", "not a key id this directory can hold")
    path = os.path.join(directory, key_id + ".key")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise Refusal("unknown_key", "no such key version") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077:
            raise Refusal("denied", "key file is not a regular file of mode 0600 or stricter")
        text = f.read(4096).strip()
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except ValueError:
        try:
            key = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise Refusal("denied", "key file is neither hex nor base64") from None
    if len(key) != 32:
        raise Refusal("denied", "key file does not hold 32 bytes")
    return key


def answer(request, directory):
    op = request.get("op")
    if op == "key-id":
        return {"key_id": current_id(directory)}
    if op == "get-key":
        key_id = request.get("key_id") or current_id(directory)
        return {"key_id": key_id, "key": read_key(directory, key_id).hex()}
    raise Refusal("denied", "operation %r is not supported by this provider" % op)


def main():
    if len(sys.argv) != 2:
        print("usage: key-provider-dir.py KEY_DIRECTORY", file=sys.stderr)
        return 2
    try:
        request = json.loads(sys.stdin.readline())
        if not isinstance(request, dict):
            raise ValueError("request is not an object")
        response = answer(request, sys.argv[1])
    except Refusal as refusal:
        response = {"error": {"code": refusal.code, "message": refusal.message}}
    except ValueError as error:
        print("bad request: %s" % error, file=sys.stderr)
        response = {"error": {"code": "denied", "message": "bad request"}}
    except OSError as error:
        print("key provider error: %s" % error, file=sys.stderr)
        response = {"error": {"code": "unavailable", "message": type(error).__name__}}
    json.dump(response, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
