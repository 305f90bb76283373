// A Node.js client of Yidi written from protos/ alone: @grpc/proto-loader reads the .proto files
// with no include path but protos/, @grpc/grpc-js calls over mTLS, and a refusal's details
// (google.rpc.ErrorInfo, LocalizedMessage, BadRequest, RetryInfo) are decoded with protobufjs
// from the vendored protos/google/rpc files.
//
//   NODE_PATH=tools/node_modules node examples/node/client.js
//
// Environment: YIDI_TARGET (default 127.0.0.1:50051), YIDI_CERTS (default certs/dev, written by
// `yidi certs`), YIDI_CALLER (default 460000: whose client certificate is presented).
// Prints one JSON line: Ping's answer and the refusal of a settlement for a person nobody filed.
"use strict";
const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const PROTOS = path.join(__dirname, "..", "..", "protos");
const target = process.env.YIDI_TARGET || "127.0.0.1:50051";
const certs = process.env.YIDI_CERTS || "certs/dev";
const caller = process.env.YIDI_CALLER || "460000";

const definition = protoLoader.loadSync(["yidi/v1/settlement.proto", "yidi/v1/diagnostics.proto"],
  { includeDirs: [PROTOS], keepCase: true, longs: String, enums: String, defaults: true });
const yidi = grpc.loadPackageDefinition(definition).yidi.v1;

// google.rpc.Status and its details, from protos/ alone.
const rpc = new protobuf.Root();
rpc.resolvePath = (_origin, file) => path.join(PROTOS, file);
rpc.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"]);

function refusal(err) {
  const out = { code: grpc.status[err.code], message: err.details };
  const raw = err.metadata.get("grpc-status-details-bin")[0];
  const status = rpc.lookupType("google.rpc.Status").decode(raw);
  for (const any of status.details) {
    const name = any.type_url.split("/").pop();           // e.g. google.rpc.ErrorInfo
    out[name] = rpc.lookupType(name).toObject(rpc.lookupType(name).decode(any.value), { longs: String });
  }
  return out;
}

const credentials = grpc.credentials.createSsl(
  fs.readFileSync(path.join(certs, "ca.pem")),
  fs.readFileSync(path.join(certs, "clients", `${caller}.key`)),
  fs.readFileSync(path.join(certs, "clients", `${caller}.pem`)));
const deadline = () => new Date(Date.now() + 10000);
const diagnostics = new yidi.DiagnosticsService(target, credentials);
const settlement = new yidi.SettlementService(target, credentials);

diagnostics.Ping({}, { deadline: deadline() }, (err, pong) => {
  if (err) throw err;
  const request = {
    request_id: `node-example-${Date.now()}`, psn_no: "P-NOBODY", fixmedins_code: "P46010000001",
    setl_date: 20261120, lines: [{ feedetl_sn: "1", code: "XA01", unit_price_fen: 1250, qty_milli: 2000 }],
  };
  settlement.OutpatientSettle(request, { deadline: deadline() }, (refused, answer) => {
    if (!refused) throw new Error(`expected a refusal, got ${JSON.stringify(answer)}`);
    console.log(JSON.stringify({ ping: pong, refused: refusal(refused) }));
    diagnostics.close();
    settlement.close();
  });
});
