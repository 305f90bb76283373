"""The contract in protos/ stands alone: buf lint and buf breaking, plain protoc, a Node.js client, reflection.

* ``buf lint`` is clean under buf.yaml's rule set (STANDARD and COMMENTS, named exceptions);
* ``buf breaking`` finds nothing against the previous release's image (contract/), and does find
  a renumbered field (so the check bites);
* Debian's plain ``protoc -I protos`` compiles every file (well-known types are protoc's own);
* a Node.js client loaded by @grpc/proto-loader from protos/ alone (examples/node/client.js) calls
  a real gateway over mTLS and decodes a refusal's ErrorInfo, LocalizedMessage and the rest;
* server reflection answers v1 and v1alpha, finds a method by its full name, and its descriptors
  carry the .proto comments.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as rpb

from external_tools import NODE_PATH, need
from gateway_harness import ROOT

PROTOS = os.path.join(ROOT, "protos")
BASELINE = sorted(glob.glob(os.path.join(ROOT, "contract", "yidi-v1-*.binpb")))[-1]
BUF_HOW = "make setup runs npm ci in tools/"


def run(*cmd: str, cwd: str = ROOT, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_buf_lint_is_clean():
    result = run(need("buf", BUF_HOW), "lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_against_the_previous_release_finds_nothing():
    result = run(need("buf", BUF_HOW), "breaking", "--against", BASELINE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_catches_a_renumbered_field(tmp_path):
    buf = need("buf", BUF_HOW)
    shutil.copytree(PROTOS, tmp_path / "protos")
    shutil.copy(os.path.join(ROOT, "buf.yaml"), tmp_path)
    common = tmp_path / "protos" / "yidi" / "v1" / "common.proto"
    text = common.read_text(encoding="utf-8")
    assert "int64 hifp_pay = 8;" in text
    common.write_text(text.replace("int64 hifp_pay = 8;", "int64 hifp_pay = 99;"), encoding="utf-8")
    result = run(buf, "breaking", "--against", BASELINE, cwd=str(tmp_path))
    assert result.returncode != 0 and "hifp_pay" in result.stdout, result.stdout + result.stderr


def test_plain_protoc_compiles_the_contract_with_no_other_include_path(tmp_path):
    protoc = need("protoc", "Debian package protobuf-compiler; make setup installs it")
    files = sorted(os.path.relpath(p, PROTOS) for p in glob.glob(os.path.join(PROTOS, "**", "*.proto"), recursive=True))
    assert {"yidi/v1/settlement.proto", "google/rpc/status.proto", "google/rpc/error_details.proto"} <= set(files)
    result = run(protoc, "-I", "protos", f"--python_out={tmp_path}", f"--descriptor_set_out={tmp_path / 'set.pb'}",
                 *[os.path.join("protos", f) for f in files])
    assert result.returncode == 0, result.stderr
    names = {f.name for f in descriptor_pb2.FileDescriptorSet.FromString((tmp_path / "set.pb").read_bytes()).file}
    assert "yidi/v1/settlement.proto" in names


def test_a_node_client_from_the_protos_alone_settles_and_reads_the_refusal(gw):
    node = need("node", "Node.js 20 from Debian or nodejs.org")
    need("buf", BUF_HOW)   # tools/node_modules is there (grpc-js, proto-loader, protobufjs)
    env = dict(os.environ, NODE_PATH=NODE_PATH, YIDI_TARGET=gw.target, YIDI_CERTS=gw.certs.directory,
               YIDI_CALLER="460000")
    result = run(node, os.path.join("examples", "node", "client.js"), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    assert answer["ping"] == {}
    refused = answer["refused"]
    assert refused["code"] == "FAILED_PRECONDITION" and refused["message"].endswith("[PERSON_NOT_FILED]")
    assert refused["google.rpc.ErrorInfo"]["reason"] == "PERSON_NOT_FILED"
    assert refused["google.rpc.ErrorInfo"]["domain"] == "yidi.gov.cn"
    english = refused["google.rpc.LocalizedMessage"]
    assert english["locale"] == "en-US" and "filing" in english["message"]


def reflect(gw, service: str, request: rpb.ServerReflectionRequest) -> rpb.ServerReflectionResponse:
    channel = gw.channel("460000")   # mTLS: any caller's certificate
    info = channel.stream_stream(f"/{service}/ServerReflectionInfo",
                                 request_serializer=rpb.ServerReflectionRequest.SerializeToString,
                                 response_deserializer=rpb.ServerReflectionResponse.FromString)
    return next(iter(info(iter([request]), timeout=10)))


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_lists_services_and_describes_a_method_with_its_comments(gw, version):
    service = f"grpc.reflection.{version}.ServerReflection"
    listed = reflect(gw, service, rpb.ServerReflectionRequest(list_services=""))
    names = {s.name for s in listed.list_services_response.service}
    assert {"yidi.v1.SettlementService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"} <= names
    answer = reflect(gw, service, rpb.ServerReflectionRequest(
        file_containing_symbol="yidi.v1.SettlementService.OutpatientSettle"))
    files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in
             answer.file_descriptor_response.file_descriptor_proto]
    assert files and files[0].name == "yidi/v1/settlement.proto"
    assert {"yidi/v1/common.proto", "google/rpc/status.proto"} <= {f.name for f in files}
    comments = " ".join(loc.leading_comments for loc in files[0].source_code_info.location)
    assert "门诊一站式" in comments and "Idempotency key" in comments
    missing = reflect(gw, service, rpb.ServerReflectionRequest(file_containing_symbol="yidi.v1.NoSuchThing"))
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
