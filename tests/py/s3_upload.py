"""Uploads test fixtures to an S3 server with boto3 (AWS's own client, not our code).

    s3_upload.py ENDPOINT KEY_ID SECRET BUCKET [KEY=FILE ...]

Creates BUCKET if it is missing, then puts each FILE under KEY. Prints the ETag of each
object, one "KEY ETAG" line each.
"""

import sys

import boto3
from botocore.config import Config


def main():
    endpoint, key_id, secret, bucket, *pairs = sys.argv[1:]
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )
    existing = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)
    for pair in pairs:
        key, path = pair.split("=", 1)
        with open(path, "rb") as f:
            s3.put_object(Bucket=bucket, Key=key, Body=f.read())
        etag = s3.head_object(Bucket=bucket, Key=key)["ETag"]
        print(key, etag)


if __name__ == "__main__":
    main()
