"""Drives SCM integrations with stubs generated from proto/ by protoc and grpc_python_plugin.

Usage: integrations.py GEN_DIR ADDRESS TOKEN RUNNER_ID
Prints, one per line: the id it created, the code of a duplicate create, the host and
OAuth client id Get returns for it, every integration id of the runner walked one page
at a time, the code of a Get for an unknown id, and of a runner it creates (its provider
alone sent) the name, kind and year of creation that GetRunner returns.
Then, as that runner would (with PyNaCl, when present): it signs up with a key pair of its
own and publishes its schema; the admin side reads the schema and creates an OAuth
integration, which the runner lists and opens; the secret is rotated and opened again; the
integration is deleted; the runner is renamed, found in ListRunners, given a new token (the
old one refused) and deleted. A line each, as the TypeScript side reads them.
"""
import sys

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
from gitpod.v1 import pagination_pb2 as pagination  # noqa: E402
from gitpod.v1 import runner_configurations_pb2 as pb  # noqa: E402
from gitpod.v1 import runner_configurations_pb2_grpc as rpc  # noqa: E402
from gitpod.v1 import runners_pb2 as runners  # noqa: E402
from gitpod.v1 import runners_pb2_grpc as runners_rpc  # noqa: E402
from gitpod.v1 import runner_interactions_pb2 as interactions  # noqa: E402
from gitpod.v1 import runner_interactions_pb2_grpc as interactions_rpc  # noqa: E402
from nacl.public import PrivateKey, SealedBox  # noqa: E402

address, token, runner_id = sys.argv[2], sys.argv[3], sys.argv[4]
metadata = [("authorization", "Bearer " + token)]


def code_of(call):
    try:
        call()
        return "OK"
    except grpc.RpcError as err:
        return err.code().name


with grpc.insecure_channel(address) as channel:
    stub = rpc.RunnerConfigurationServiceStub(channel)
    request = pb.CreateSCMIntegrationRequest(
        runner_id=runner_id, scm_id="github", host="github.python.example", pat=True
    )
    created = stub.CreateSCMIntegration(request, metadata=metadata).id
    print(created)
    print(code_of(lambda: stub.CreateSCMIntegration(request, metadata=metadata)))

    got = stub.GetSCMIntegration(pb.GetSCMIntegrationRequest(id=created), metadata=metadata).integration
    print(got.host, got.oauth.client_id if got.HasField("oauth") else "-")

    ids, page_token = [], ""
    while True:
        response = stub.ListSCMIntegrations(
            pb.ListSCMIntegrationsRequest(
                pagination=pagination.PaginationRequest(page_size=1, token=page_token),
                filter=pb.ListSCMIntegrationsRequest.Filter(runner_ids=[runner_id]),
            ),
            metadata=metadata,
        )
        ids.extend(i.id for i in response.integrations)
        page_token = response.pagination.next_token
        if not page_token:
            break
    print(" ".join(ids))

    unknown = pb.GetSCMIntegrationRequest(id="0190a0a0-0000-7000-8000-000000000000")
    print(code_of(lambda: stub.GetSCMIntegration(unknown, metadata=metadata)))

    registry = runners_rpc.RunnerServiceStub(channel)
    made_response = registry.CreateRunner(
        runners.CreateRunnerRequest(name="python made", provider=runners.RUNNER_PROVIDER_LINUX_HOST), metadata=metadata
    )
    made = made_response.runner
    runner = registry.GetRunner(runners.GetRunnerRequest(runner_id=made.runner_id), metadata=metadata).runner
    print(runner.name, runners.RunnerKind.Name(runner.kind), runner.created_at.ToDatetime().year)

    # The runner's side, with the access token CreateRunner gave.
    runner_token = [("authorization", "Bearer " + made_response.access_token)]
    runner_calls = interactions_rpc.RunnerInteractionServiceStub(channel)
    key = PrivateKey.generate()
    signed = runner_calls.Signup(interactions.SignupRequest(public_key=bytes(key.public_key)), metadata=runner_token)
    print(signed.runner_id == made.runner_id)
    schema = pb.RunnerConfigurationSchema(
        version="py-1",
        scm=[
            pb.RunnerConfigurationSchema.SCMConfigSchema(
                scm_id="forgejo", name="Forgejo", default_hosts=["codeberg.org"],
                oauth=pb.RunnerConfigurationSchema.OAuth(),
                pat=pb.RunnerConfigurationSchema.PersonalAccessToken(description="repo scope", docs_link="https://codeberg.org/docs"),
            )
        ],
    )
    runner_calls.UpdateRunnerConfigurationSchema(
        interactions.UpdateRunnerConfigurationSchemaRequest(runner_id=made.runner_id, config_schema=schema), metadata=runner_token
    )
    published = stub.GetRunnerConfigurationSchema(pb.GetRunnerConfigurationSchemaRequest(runner_id=made.runner_id), metadata=metadata).schema
    print(published.version, " ".join(e.scm_id for e in published.scm), published.scm[0].oauth.callback_url != "")

    oauth = stub.CreateSCMIntegration(
        pb.CreateSCMIntegrationRequest(
            runner_id=made.runner_id, scm_id="forgejo", host="codeberg.org", oauth_client_id="py-app", oauth_plaintext_client_secret="py-secret"
        ),
        metadata=metadata,
    ).id

    def opened():
        listed = runner_calls.ListRunnerSCMIntegrations(
            interactions.ListRunnerSCMIntegrationsRequest(runner_id=made.runner_id), metadata=runner_token
        ).scm_integrations
        return " ".join(i.id + "=" + SealedBox(key).decrypt(i.oauth.encrypted_client_secret).decode() for i in listed)

    print(opened() == oauth + "=py-secret")
    stub.UpdateSCMIntegration(pb.UpdateSCMIntegrationRequest(id=oauth, oauth_plaintext_client_secret="py-rotated"), metadata=metadata)
    print(opened() == oauth + "=py-rotated")
    stub.DeleteSCMIntegration(pb.DeleteSCMIntegrationRequest(id=oauth), metadata=metadata)
    print(code_of(lambda: stub.GetSCMIntegration(pb.GetSCMIntegrationRequest(id=oauth), metadata=metadata)))

    registry.UpdateRunner(runners.UpdateRunnerRequest(runner_id=made.runner_id, name="python renamed"), metadata=metadata)
    found, page_token = [], ""
    while True:
        page = registry.ListRunners(runners.ListRunnersRequest(pagination=pagination.PaginationRequest(page_size=2, token=page_token)), metadata=metadata)
        found.extend(r.name for r in page.runners if r.runner_id == made.runner_id)
        page_token = page.pagination.next_token
        if not page_token:
            break
    print(found)
    fresh = registry.CreateRunnerToken(runners.CreateRunnerTokenRequest(runner_id=made.runner_id), metadata=metadata).access_token
    listing = interactions.ListRunnerSCMIntegrationsRequest(runner_id=made.runner_id)
    print(
        code_of(lambda: runner_calls.ListRunnerSCMIntegrations(listing, metadata=runner_token)),
        code_of(lambda: runner_calls.ListRunnerSCMIntegrations(listing, metadata=[("authorization", "Bearer " + fresh)])),
    )
    registry.DeleteRunner(runners.DeleteRunnerRequest(runner_id=made.runner_id), metadata=metadata)
    print(code_of(lambda: registry.GetRunner(runners.GetRunnerRequest(runner_id=made.runner_id), metadata=metadata)))
