"""What ``distgan submit`` hands to a Ray cluster, and over what: no cluster is started.

Ray 2.60 writes a job's runtime env into its nodes' ``runtime_env_agent.log`` and returns it,
with the entrypoint and the metadata, from its Jobs API to every token holder. So no value of
the submitting shell's environment may go there (``--env`` is refused), and the token goes over
plain http only to a loopback address unless the user says ``--insecure-http``.

An address that must not be contacted is ``http://head.invalid:8265`` (``.invalid`` never
resolves, so a client that tried anyway fails at once with "cannot reach"); a loopback one is
the port ray_port_base() + 999, which stays closed.
"""

from __future__ import annotations

import json

import pytest
from conftest import REPO, ray_port_base

from distgan.cli import main
from distgan.errors import JobError
from distgan.submit import prepare

JOB = str(REPO / "jobs" / "quickstart.yaml")
FAR = "http://head.invalid:8265"
SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE7Q2K9",
    "AWS_SECRET_ACCESS_KEY": "sekrit-123-aws",
    "AWS_SESSION_TOKEN": "sekrit-456-session",
    "RAY_AUTH_TOKEN": "sekrit-789-ray",
    "WANDB_API_KEY": "sekrit-000-wandb",
}


@pytest.fixture
def shell(monkeypatch, tmp_path):
    """This shell's environment: the secrets above set, no other Ray address or token (a home
    of its own, so no ~/.ray/auth_token of the machine's)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def one_error_line(capsys) -> str:
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("error: ")
    for value in SECRETS.values():
        assert value not in line
    return line.removeprefix("error: ")


def test_submit_env_is_refused_in_one_line_before_any_cluster(shell, capsys):
    argv = ["submit", JOB, "--env", "AWS_SECRET_ACCESS_KEY", "--env", "AWS_ACCESS_KEY_ID"]
    assert main([*argv, "--address", FAR, "--insecure-http"]) == 2
    line = one_error_line(capsys)  # not "cannot reach": no cluster was contacted
    assert line.startswith("--env AWS_SECRET_ACCESS_KEY: refused: Ray writes a job's environment")
    for way in ("runtime_env_agent.log", "Jobs API", "instance role (IAM)", "Kubernetes secret",
                "`ray start` run with it set", "cluster/README.md"):  # fmt: skip
        assert way in line


def test_what_submit_sends_holds_no_value_of_this_shells_environment(shell):
    job = prepare(JOB, ["train.steps=5", "run.storage=/shared/runs"])
    assert set(job.runtime_env) == {"working_dir", "excludes", "env_vars"}
    # One setting of Ray's, no value of this shell's environment.
    assert job.runtime_env["env_vars"] == {"RAY_JOB_STOP_WAIT_TIME_S": "60"}
    sent = json.dumps([job.entrypoint, job.runtime_env, job.metadata, job.submission_id])
    for name, value in SECRETS.items():
        assert value not in sent, name
    assert job.entrypoint.endswith(
        "train jobs/quickstart.yaml --set train.steps=5 --set run.storage=/shared/runs"
    )


def test_a_storage_uri_with_credentials_never_reaches_the_entrypoint(shell):
    uri = f"s3://{SECRETS['AWS_ACCESS_KEY_ID']}:{SECRETS['AWS_SECRET_ACCESS_KEY']}@bucket/runs"
    with pytest.raises(JobError) as info:
        prepare(JOB, [f"run.storage={uri}"])
    message = str(info.value)
    assert message.startswith(f"{JOB}: run.storage: the URI holds credentials (USER:SECRET@)")
    assert "instance role" in message and SECRETS["AWS_SECRET_ACCESS_KEY"] not in message


@pytest.mark.parametrize("token_from", ["RAY_AUTH_TOKEN", "~/.ray/auth_token"])
def test_the_token_is_not_sent_over_plain_http_to_another_host(shell, capsys, tmp_path, token_from):
    if token_from != "RAY_AUTH_TOKEN":
        shell.delenv("RAY_AUTH_TOKEN")
        (tmp_path / ".ray").mkdir()
        (tmp_path / ".ray" / "auth_token").write_text(SECRETS["RAY_AUTH_TOKEN"] + "\n")
    shell.setenv("RAY_ADDRESS", FAR)  # the address from the environment is checked the same
    assert main(["submit", JOB]) == 2
    line = one_error_line(capsys)
    assert line.startswith(
        f"{FAR}: refusing to send the cluster's token (from {token_from}) over plain http to a "
        "host that is not loopback"
    )
    assert "use https://" in line and "ssh -L 8265:127.0.0.1:8265 HEAD" in line
    assert "--address http://127.0.0.1:8265" in line and "--insecure-http" in line


@pytest.mark.parametrize(
    "address, flags",
    [
        (FAR, ["--insecure-http"]),
        ("https://head.invalid:8265", []),
        ("http://127.0.0.1:{port}", []),
        ("http://localhost:{port}", []),
        ("http://[::1]:{port}", []),
    ],
)
def test_the_token_goes_over_https_to_loopback_or_when_the_user_says_so(
    shell, capsys, address, flags
):
    address = address.format(port=ray_port_base() + 999)
    assert main(["submit", JOB, "--address", address, *flags]) == 2
    # It got as far as trying the address: nothing listens there.
    assert one_error_line(capsys).startswith(f"{address}: cannot reach the Ray Jobs API there")


JOB_VERBS = [["status", "raysubmit_X"], ["logs", "raysubmit_X"], ["stop", "raysubmit_X"], ["jobs"]]


@pytest.mark.parametrize("verb", JOB_VERBS, ids=lambda v: v[0])
def test_the_job_verbs_keep_the_token_off_plain_http_unless_the_user_says_so(shell, capsys, verb):
    """status, logs, stop and jobs send the token too: the same refusal as submit's, before any
    connection (10.1.2.3 is never contacted), and the same way past it."""
    near = "http://10.1.2.3:8265"
    assert main([*verb, "--address", near]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"{near}: refusing to send the cluster's token (from RAY_AUTH_TOKEN)")
    assert "--insecure-http" in line

    # With --insecure-http the check lets it through: it tries the address (one that never
    # resolves, so nothing leaves this machine) and cannot reach it.
    assert main([*verb, "--address", FAR, "--insecure-http"]) == 2
    assert one_error_line(capsys).startswith(f"{FAR}: cannot reach the Ray Jobs API there")
