"""Drives SCM integrations with stubs generated from proto/ by protoc and grpc_python_plugin.

Usage: integrations.py GEN_DIR ADDRESS TOKEN RUNNER_ID
Prints, one per line: the id it created, the code of a duplicate create, the host and
OAuth client id Get returns for it, every integration id of the runner walked one page
at a time, the code of a Get for an unknown id, and of a runner it creates (its provider
alone sent) the name, kind and year of creation that GetRunner returns.
"""
import sys

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
from gitpod.v1 import pagination_pb2 as pagination  # noqa: E402
from gitpod.v1 import runner_configurations_pb2 as pb  # noqa: E402
from gitpod.v1 import runner_configurations_pb2_grpc as rpc  # noqa: E402
from gitpod.v1 import runners_pb2 as runners  # noqa: E402
from gitpod.v1 import runners_pb2_grpc as runners_rpc  # noqa: E402

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
    made = registry.CreateRunner(
        runners.CreateRunnerRequest(name="python made", provider=runners.RUNNER_PROVIDER_LINUX_HOST), metadata=metadata
    ).runner
    runner = registry.GetRunner(runners.GetRunnerRequest(runner_id=made.runner_id), metadata=metadata).runner
    print(runner.name, runners.RunnerKind.Name(runner.kind), runner.created_at.ToDatetime().year)
