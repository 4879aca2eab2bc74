"""Starts moto_server on loopback and creates the connector's resources in it.

Run through infra/stack.sh, which provides the virtualenv. State lives in .local/:
moto.pid, moto.log and stack.env (shell `export` lines read by the tests, the demo and you).
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3

REGION = "us-east-1"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
TABLE = "teleagent-bitrix-local"
QUEUE = "teleagent-leads-local.fifo"
DLQ = "teleagent-leads-local-dlq.fifo"
CHANGES_QUEUE = "teleagent-lead-changes-local.fifo"
WATCH_QUEUE = "teleagent-watch-local"
# The sparse index lead-watch's schedule reads (as in infra/template.yaml).
WATCH_INDEX = {"IndexName": "watch",
               "KeySchema": [{"AttributeName": "watch_shard", "KeyType": "HASH"}],
               "Projection": {"ProjectionType": "INCLUDE",
                              "NonKeyAttributes": ["sync_status", "last_sync_at", "watch_opt_in"]}}
KEY_ALIAS = "alias/teleagent-bitrix-local"
MAX_RECEIVE_COUNT = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/moto-api/", timeout=1) as r:
            return r.status == 200
    except Exception:
        return False


def read_env(path: Path) -> dict:
    env = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("export ") and "=" in line:
                k, v = line[len("export "):].split("=", 1)
                env[k] = v.strip("'\"")
    return env


def clients(endpoint: str):
    kw = dict(endpoint_url=endpoint, region_name=REGION,
              aws_access_key_id=CREDS["AWS_ACCESS_KEY_ID"],
              aws_secret_access_key=CREDS["AWS_SECRET_ACCESS_KEY"])
    return boto3.client("dynamodb", **kw), boto3.client("kms", **kw), boto3.client("sqs", **kw)


def create_resources(endpoint: str) -> dict:
    ddb, kms, sqs = clients(endpoint)
    if TABLE not in ddb.list_tables()["TableNames"]:
        ddb.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                       {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                  {"AttributeName": "sk", "AttributeType": "S"},
                                  {"AttributeName": "watch_shard", "AttributeType": "S"}],
            GlobalSecondaryIndexes=[WATCH_INDEX],
            BillingMode="PAY_PER_REQUEST")
        ddb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={
            "Enabled": True, "AttributeName": "expires_at"})
    indexes = ddb.describe_table(TableName=TABLE)["Table"].get("GlobalSecondaryIndexes", [])
    if not any(i["IndexName"] == WATCH_INDEX["IndexName"] for i in indexes):
        # A table made by an older version of this script (a stack left running).
        ddb.update_table(
            TableName=TABLE,
            AttributeDefinitions=[{"AttributeName": "watch_shard", "AttributeType": "S"}],
            GlobalSecondaryIndexUpdates=[{"Create": WATCH_INDEX}])
    aliases = {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases()["Aliases"]}
    if KEY_ALIAS in aliases and aliases[KEY_ALIAS]:
        key_id = aliases[KEY_ALIAS]
    else:
        key_id = kms.create_key(Description="TeleAgent Bitrix24 tokens (local)")["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName=KEY_ALIAS, TargetKeyId=key_id)
    fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "false"}
    dlq_url = sqs.create_queue(QueueName=DLQ, Attributes=fifo)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(QueueName=QUEUE, Attributes={
        **fifo, "VisibilityTimeout": "180",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                     "maxReceiveCount": str(MAX_RECEIVE_COUNT)})})["QueueUrl"]
    changes_url = sqs.create_queue(QueueName=CHANGES_QUEUE, Attributes=fifo)["QueueUrl"]
    watch_url = sqs.create_queue(QueueName=WATCH_QUEUE, Attributes={"VisibilityTimeout": "360"})["QueueUrl"]
    return {"TABLE_NAME": TABLE, "KMS_KEY_ID": key_id, "LEAD_QUEUE_URL": queue_url,
            "DEAD_LETTER_QUEUE_URL": dlq_url, "LEAD_QUEUE_MAX_RECEIVE_COUNT": str(MAX_RECEIVE_COUNT),
            "LEAD_CHANGES_QUEUE_URL": changes_url, "WATCH_QUEUE_URL": watch_url}


def up(state: Path) -> None:
    env_file = state / "stack.env"
    known = read_env(env_file)
    endpoint = known.get("AWS_ENDPOINT_URL")
    if not (endpoint and answers(endpoint)):
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        moto = Path(sys.executable).parent / "moto_server"
        log = open(state / "moto.log", "ab")
        proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        (state / "moto.pid").write_text(str(proc.pid))
        deadline = time.time() + 30
        while not answers(endpoint):
            if proc.poll() is not None or time.time() > deadline:
                sys.exit(f"stack: moto_server did not start; see {state / 'moto.log'}")
            time.sleep(0.1)
        print(f"stack: moto_server listening on {endpoint} (pid {proc.pid})", file=sys.stderr)
    resources = create_resources(endpoint)
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
           **CREDS, **resources}
    tmp = env_file.with_suffix(".tmp")
    tmp.write_text("".join(f"export {k}='{v}'\n" for k, v in env.items()))
    tmp.replace(env_file)
    print(env_file.read_text(), end="")


def down(state: Path) -> None:
    pid_file = state / "moto.pid"
    if pid_file.exists():
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
            print("stack: moto_server stopped", file=sys.stderr)
        except (ProcessLookupError, ValueError, PermissionError):
            pass
        pid_file.unlink()
    (state / "stack.env").unlink(missing_ok=True)


def status(state: Path) -> None:
    env = read_env(state / "stack.env")
    if env.get("AWS_ENDPOINT_URL") and answers(env["AWS_ENDPOINT_URL"]):
        print((state / "stack.env").read_text(), end="")
    else:
        sys.exit("stack: not running")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["up", "down", "status"])
    p.add_argument("--state", type=Path, required=True)
    a = p.parse_args()
    a.state.mkdir(parents=True, exist_ok=True)
    {"up": up, "down": down, "status": status}[a.command](a.state)


if __name__ == "__main__":
    main()
