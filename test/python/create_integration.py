"""Creates an SCM integration with stubs generated from proto/ by protoc and grpc_python_plugin.

Usage: create_integration.py GEN_DIR ADDRESS TOKEN RUNNER_ID
Prints the new integration id, then the code of a duplicate create.
"""
import sys

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
from gitpod.v1 import runner_configurations_pb2 as pb  # noqa: E402
from gitpod.v1 import runner_configurations_pb2_grpc as rpc  # noqa: E402

address, token, runner_id = sys.argv[2], sys.argv[3], sys.argv[4]
with grpc.insecure_channel(address) as channel:
    stub = rpc.RunnerConfigurationServiceStub(channel)
    metadata = [("authorization", "Bearer " + token)]
    request = pb.CreateSCMIntegrationRequest(
        runner_id=runner_id, scm_id="github", host="github.python.example", pat=True
    )
    print(stub.CreateSCMIntegration(request, metadata=metadata).id)
    try:
        stub.CreateSCMIntegration(request, metadata=metadata)
        print("OK")
    except grpc.RpcError as err:
        print(err.code().name)
