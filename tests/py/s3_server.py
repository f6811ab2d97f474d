"""A real S3-compatible server for the tests: moto's server, on 127.0.0.1.

    s3_server.py [--port N] [--auth]

Binds (port 0: a free port), then prints one JSON line on stdout:
    {"port": N, "access_key_id": ..., "secret_access_key": ...}
and serves until stdin closes (the test that started it ended) or it is killed.

Without --auth moto accepts any credentials (the keys printed are placeholders to sign
with). With --auth it checks every request's SigV4 signature against an IAM user it
creates first: the keys printed are that user's, and any other key or secret is refused
(InvalidAccessKeyId / SignatureDoesNotMatch), as AWS does.
"""

import argparse
import json
import sys

from moto.moto_server.werkzeug_app import MotoRequestHandler
from moto.server import ThreadedMotoServer

PLACEHOLDER_KEY = "arrfs-test-key"
PLACEHOLDER_SECRET = "arrfs-test-secret"


def make_user(endpoint):
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=PLACEHOLDER_KEY,
        aws_secret_access_key=PLACEHOLDER_SECRET,
    )
    iam.create_user(UserName="arrfs-test")
    iam.put_user_policy(
        UserName="arrfs-test",
        PolicyName="all-s3",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName="arrfs-test")["AccessKey"]
    # From now on every request must be signed by a known key (what moto's
    # /moto-api/reset-auth does; the server runs in this process).
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    return key["AccessKeyId"], key["SecretAccessKey"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--auth", action="store_true")
    args = parser.parse_args()

    # moto answers headers and body in separate writes: with Nagle's algorithm each answer
    # waits for the client's delayed ACK (40 ms).
    MotoRequestHandler.disable_nagle_algorithm = True
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    endpoint = f"http://127.0.0.1:{port}"
    key, secret = (PLACEHOLDER_KEY, PLACEHOLDER_SECRET)
    if args.auth:
        key, secret = make_user(endpoint)
    print(json.dumps({"port": port, "access_key_id": key, "secret_access_key": secret}), flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
